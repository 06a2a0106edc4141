/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_PLUGIN_H
#define SQLBOX_PLUGIN_H

struct module;

#define SQLBOX_PLUGIN_EXPORT __attribute__((visibility("default")))

extern SQLBOX_PLUGIN_EXPORT const char *sqlbox_plugin_version;
SQLBOX_PLUGIN_EXPORT void sqlbox_plugin_init(struct module *module);
SQLBOX_PLUGIN_EXPORT void sqlbox_plugin_deinit(void);

#endif
