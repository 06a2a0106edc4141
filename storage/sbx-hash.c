/* SPDX-License-Identifier: MIT */
/* SHA-256 of message bodies, through OpenSSL's EVP interface only.

   The digest is fetched once per process and kept (EVP_MD_fetch is not
   free: it searches the providers); each struct sbx_hash owns one
   EVP_MD_CTX, fed as a body streams in. The low-level SHA256_* calls are
   deprecated in OpenSSL 3 and are not used. The digest is the body's
   identity for deduplication (sbx_body_lookup_hash()), so it covers
   exactly the bytes stored. */
#include <stdlib.h>

#include <openssl/evp.h>

#include "sbx-hash.h"

struct sbx_hash {
	EVP_MD_CTX *ctx;
};

/* Fetched on first use, kept for the life of the process. */
static EVP_MD *sbx_hash_sha256 = NULL;

static const EVP_MD *sbx_hash_md(void)
{
	if (sbx_hash_sha256 == NULL)
		sbx_hash_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	return sbx_hash_sha256;
}

struct sbx_hash *sbx_hash_alloc(void)
{
	const EVP_MD *md = sbx_hash_md();
	struct sbx_hash *hash;

	if (md == NULL)
		return NULL;
	hash = calloc(1, sizeof(*hash));
	if (hash == NULL)
		return NULL;
	hash->ctx = EVP_MD_CTX_new();
	if (hash->ctx == NULL)
		goto out_free;
	if (EVP_DigestInit_ex(hash->ctx, md, NULL) != 1)
		goto out_free_ctx;
	return hash;
out_free_ctx:
	EVP_MD_CTX_free(hash->ctx);
out_free:
	free(hash);
	return NULL;
}

void sbx_hash_update(struct sbx_hash *hash, const void *data, size_t size)
{
	/* Cannot fail for an initialised software digest. */
	(void)EVP_DigestUpdate(hash->ctx, data, size);
}

void sbx_hash_final(struct sbx_hash *hash, uint8_t digest[SBX_SHA256_SIZE])
{
	unsigned int len = SBX_SHA256_SIZE;

	(void)EVP_DigestFinal_ex(hash->ctx, digest, &len);
}

void sbx_hash_free(struct sbx_hash **_hash)
{
	struct sbx_hash *hash = *_hash;

	if (hash == NULL)
		return;
	*_hash = NULL;
	EVP_MD_CTX_free(hash->ctx);
	free(hash);
}
