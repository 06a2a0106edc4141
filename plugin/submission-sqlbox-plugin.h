/* SPDX-License-Identifier: MIT */
#ifndef SUBMISSION_SQLBOX_PLUGIN_H
#define SUBMISSION_SQLBOX_PLUGIN_H

struct module;

#define SQLBOX_EXPORT __attribute__((visibility("default")))

SQLBOX_EXPORT extern const char *submission_sqlbox_plugin_version;
SQLBOX_EXPORT extern const char submission_sqlbox_plugin_binary_dependency[];

SQLBOX_EXPORT void submission_sqlbox_plugin_init(struct module *module);
SQLBOX_EXPORT void submission_sqlbox_plugin_deinit(void);

#endif
