/* SPDX-License-Identifier: MIT */
/* SHA-256 of message bodies through OpenSSL's EVP interface. */
#ifndef SBX_HASH_H
#define SBX_HASH_H

#include "sbx-common.h"

struct sbx_hash;

/* Returns NULL only when out of memory or OpenSSL has no SHA-256. */
struct sbx_hash *sbx_hash_alloc(void);
void sbx_hash_update(struct sbx_hash *hash, const void *data, size_t size);
/* Writes the digest; the hash may not be updated afterwards. */
void sbx_hash_final(struct sbx_hash *hash, uint8_t digest[SBX_SHA256_SIZE]);
/* Accepts *hash == NULL. */
void sbx_hash_free(struct sbx_hash **hash);

#endif
