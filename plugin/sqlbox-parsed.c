/* SPDX-License-Identifier: MIT */
/* Parsing a message once, at save, for what readers would otherwise parse
   again in every process: Dovecot's index here is in memory and its
   cache keeps nothing between sessions. The parse is Dovecot's own
   (lib-mail's parser and lib-imap's BODYSTRUCTURE writer, with the
   settings index-mail uses), so what is kept is what a reader parsing the
   body would produce. */

#include "lib.h"
#include "istream.h"
#include "str.h"
#include "mail-user.h"
#include "message-parser.h"
#include "message-part-data.h"
#include "imap-bodystructure.h"
#include "imap-envelope.h"
#include "sbx-body.h"
#include "sqlbox-parsed.h"

/* Header lines or an ENVELOPE larger than this are not kept: readers
   parse. */
#define SQLBOX_PARSED_MAX_HEADERS (64 * 1024)

static const char *const sqlbox_parsed_headers[] = {
	SBX_BODY_PARSED_HEADERS
};

static const struct message_parser_settings sqlbox_parsed_parser_set = {
	.hdr_flags = MESSAGE_HEADER_PARSER_FLAG_SKIP_INITIAL_LWSP |
		MESSAGE_HEADER_PARSER_FLAG_DROP_CR,
	.flags = MESSAGE_PARSER_FLAG_SKIP_BODY_BLOCK,
};

struct sqlbox_parse_context {
	pool_t part_pool;
	/* what the message's MIME headers may cost, as index-mail allows */
	struct message_part_data_limits limits;
	string_t *headers;
	/* the top-level header's ENVELOPE fields */
	struct message_part_envelope *envelope;
	/* the current header field is kept (for its continuation lines) */
	bool keep_field;
};

bool sqlbox_parsed_allowed(struct mail_user *user)
{
	const char *version =
		mail_user_plugin_getenv(user, "mail_crypt_save_version");

	/* mail_crypt encrypts new mail unless its save version is 0 */
	return version == NULL || version[0] == '\0' ||
		strcmp(version, "0") == 0;
}

bool sqlbox_parsed_keeps_header(const char *name)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(sqlbox_parsed_headers); i++) {
		if (strcasecmp(name, sqlbox_parsed_headers[i]) == 0)
			return TRUE;
	}
	return FALSE;
}

static void sqlbox_parsed_header(struct message_part *part,
				 struct message_header_line *hdr,
				 struct sqlbox_parse_context *ctx)
{
	message_part_data_parse_from_header(ctx->part_pool, part,
					    &ctx->limits, hdr);
	if (part->parent != NULL)
		return;
	message_part_envelope_parse_from_header(ctx->part_pool,
						&ctx->envelope, &ctx->limits,
						hdr);
	if (hdr == NULL || hdr->eoh || ctx->headers == NULL)
		return;
	if (!hdr->continued) {
		ctx->keep_field = sqlbox_parsed_keeps_header(hdr->name);
		if (!ctx->keep_field)
			return;
		str_append(ctx->headers, hdr->name);
		str_append_data(ctx->headers, hdr->middle, hdr->middle_len);
	} else if (!ctx->keep_field) {
		return;
	}
	str_append_data(ctx->headers, hdr->value, hdr->value_len);
	if (!hdr->no_newline)
		str_append_c(ctx->headers, '\n');
	if (str_len(ctx->headers) > SQLBOX_PARSED_MAX_HEADERS)
		ctx->headers = NULL;
}

int sqlbox_parsed_parse(struct istream *input, pool_t pool,
			struct sqlbox_parsed *parsed_r, const char **error_r)
{
	struct sqlbox_parse_context ctx;
	struct message_parser_ctx *parser;
	struct message_part *parts;
	const char *error;
	string_t *bodystructure, *envelope;
	int ret = 0;

	i_zero(parsed_r);
	i_zero(&ctx);
	ctx.limits = (struct message_part_data_limits)
		MESSAGE_PART_DATA_LIMITS_INIT;
	ctx.part_pool = pool_alloconly_create("sqlbox parse", 8192);
	ctx.headers = str_new(ctx.part_pool, 1024);
	parser = message_parser_init(ctx.part_pool, input,
				     &sqlbox_parsed_parser_set);
	message_parser_parse_body(parser, sqlbox_parsed_header, &ctx);
	message_parser_deinit(&parser, &parts);
	if (input->stream_errno != 0) {
		*error_r = t_strdup_printf("read(%s) failed: %s",
					   i_stream_get_name(input),
					   i_stream_get_error(input));
		ret = -1;
	} else {
		if (ctx.headers != NULL) {
			/* none of the fields: empty, but kept (not NULL) */
			parsed_r->headers_size = str_len(ctx.headers);
			parsed_r->headers = parsed_r->headers_size == 0 ?
				(const unsigned char *)"" :
				p_memdup(pool, str_data(ctx.headers),
					 str_len(ctx.headers));
		}
		bodystructure = t_str_new(256);
		if (imap_bodystructure_write(parts, bodystructure, TRUE,
					     &error) == 0) {
			parsed_r->bodystructure =
				p_strdup(pool, str_c(bodystructure));
		}
		envelope = t_str_new(256);
		imap_envelope_write(ctx.envelope, envelope);
		if (str_len(envelope) <= SQLBOX_PARSED_MAX_HEADERS)
			parsed_r->envelope = p_strdup(pool, str_c(envelope));
	}
	pool_unref(&ctx.part_pool);
	return ret;
}

/* The length of the field line at data[pos] with its continuations,
   and the end of its name. */
static size_t sqlbox_parsed_field_len(const unsigned char *data, size_t size,
				      size_t pos, size_t *name_end_r)
{
	size_t i = pos;

	*name_end_r = size;
	for (; i < size; i++) {
		if (data[i] == ':' && *name_end_r == size)
			*name_end_r = i;
		if (data[i] == '\n' &&
		    (i + 1 == size || (data[i + 1] != ' ' &&
				       data[i + 1] != '\t')))
			return i + 1 - pos;
	}
	return size - pos;
}

bool sqlbox_parsed_filter_headers(const unsigned char *data, size_t size,
				  const char *const *names, unsigned int count,
				  string_t *dest)
{
	size_t pos, len, name_end, name_len;
	unsigned int i;

	for (i = 0; i < count; i++) {
		if (!sqlbox_parsed_keeps_header(names[i]))
			return FALSE;
	}
	for (pos = 0; pos < size; pos += len) {
		len = sqlbox_parsed_field_len(data, size, pos, &name_end);
		if (name_end >= pos + len)
			continue;
		/* the name may end in spaces before its colon */
		name_len = name_end - pos;
		while (name_len > 0 && (data[pos + name_len - 1] == ' ' ||
					data[pos + name_len - 1] == '\t'))
			name_len--;
		for (i = 0; i < count; i++) {
			if (strlen(names[i]) == name_len &&
			    strncasecmp(names[i], (const char *)data + pos,
					name_len) == 0) {
				str_append_data(dest, data + pos, len);
				break;
			}
		}
	}
	/* a last line without its newline (a message that is all header)
	   gets one, as Dovecot's header filter adds it, before the end */
	if (str_len(dest) > 0 && str_data(dest)[str_len(dest) - 1] != '\n')
		str_append_c(dest, '\n');
	str_append_c(dest, '\n');
	return TRUE;
}
