/* SPDX-License-Identifier: MIT */
/* sbx-hash.c: SHA-256 through EVP. */
#include <string.h>

#include <criterion/criterion.h>

#include "sbx-hash.h"

static void digest_of(const char *text, uint8_t digest[SBX_SHA256_SIZE])
{
	struct sbx_hash *hash = sbx_hash_alloc();

	cr_assert_not_null(hash);
	sbx_hash_update(hash, text, strlen(text));
	sbx_hash_final(hash, digest);
	sbx_hash_free(&hash);
	cr_assert_null(hash);
}

Test(hash, sha256_of_abc_is_the_known_digest)
{
	/* FIPS 180-2, appendix B.1. */
	static const uint8_t expected[SBX_SHA256_SIZE] = {
		0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
		0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
		0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
		0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
	};
	uint8_t digest[SBX_SHA256_SIZE];

	digest_of("abc", digest);
	cr_assert_arr_eq(digest, expected, sizeof(expected));
}

Test(hash, sha256_of_nothing_is_the_known_digest)
{
	static const uint8_t expected[SBX_SHA256_SIZE] = {
		0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14,
		0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
		0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c,
		0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
	};
	uint8_t digest[SBX_SHA256_SIZE];

	digest_of("", digest);
	cr_assert_arr_eq(digest, expected, sizeof(expected));
}

Test(hash, pieces_hash_like_the_whole)
{
	const char *text = "The quick brown fox jumps over the lazy dog";
	uint8_t whole[SBX_SHA256_SIZE], pieces[SBX_SHA256_SIZE];
	struct sbx_hash *hash = sbx_hash_alloc();
	size_t i;

	digest_of(text, whole);
	cr_assert_not_null(hash);
	for (i = 0; text[i] != '\0'; i++)
		sbx_hash_update(hash, text + i, 1);
	sbx_hash_final(hash, pieces);
	sbx_hash_free(&hash);
	cr_assert_arr_eq(pieces, whole, sizeof(whole));
}

Test(hash, free_accepts_null)
{
	struct sbx_hash *hash = NULL;

	sbx_hash_free(&hash);
	cr_assert_null(hash);
}
