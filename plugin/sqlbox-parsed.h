/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_PARSED_H
#define SQLBOX_PARSED_H

/* What a save keeps of a message's parse (schema version 3): the lines
   of a fixed set of header fields, the BODYSTRUCTURE and the ENVELOPE, so
   that FETCH
   ENVELOPE, BODY, BODYSTRUCTURE, HEADER.FIELDS and header SEARCH read a
   short value instead of the body. */

struct mail_user;

struct sqlbox_parsed {
	/* the set's header lines of the top-level header, raw, in order,
	   each ending in LF (as Dovecot's own cache keeps them); NULL if
	   too large to keep */
	const unsigned char *headers;
	size_t headers_size;
	/* extended BODYSTRUCTURE; NULL if the parts could not be written */
	const char *bodystructure;
	/* ENVELOPE; NULL if too large to keep */
	const char *envelope;
};

/* FALSE when nothing parsed may be kept for the user's new mail: bodies
   encrypted at rest (mail_crypt) must not leave their headers in clear
   beside them. */
bool sqlbox_parsed_allowed(struct mail_user *user);

/* TRUE if header field name is in the kept set. */
bool sqlbox_parsed_keeps_header(const char *name);

/* Parses a whole message from the start of input into *parsed_r
   (allocated from pool). Returns 0, or -1 with *error_r set if input
   fails. */
int sqlbox_parsed_parse(struct istream *input, pool_t pool,
			struct sqlbox_parsed *parsed_r, const char **error_r);

/* Appends to dest the kept lines (data, size) of the count fields in
   names, in their order, followed by the empty line that ends a header.
   Returns FALSE, appending nothing, unless every name is in the kept
   set. */
bool sqlbox_parsed_filter_headers(const unsigned char *data, size_t size,
				  const char *const *names, unsigned int count,
				  string_t *dest);

#endif
