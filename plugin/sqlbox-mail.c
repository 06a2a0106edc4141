/* SPDX-License-Identifier: MIT */
/* Reading a message: its row in SQL gives sizes, dates, GUID and POP3
   fields without touching the body; the body is streamed from SQL only
   when the message's content is wanted. A message being saved (not yet in
   SQL) is served from the save context's spooled copy. */

#include "lib.h"
#include "istream.h"
#include "str.h"
#include "index-mail.h"
#include "imap-bodystructure.h"
#include "sbx-body.h"
#include "sbx-db.h"
#include "sbx-msg.h"
#include "sqlbox-istream.h"
#include "sqlbox-parsed.h"
#include "sqlbox-rows.h"
#include "sqlbox-save.h"
#include "sqlbox-error.h"
#include "sqlbox-storage.h"
#include "sqlbox-mail.h"

struct sqlbox_mail {
	struct index_mail imail;

	/* the message's row (sqlbox-rows.c), valid while row != NULL and
	   row->uid == uid, in row_pool, which the mail keeps referenced.
	   Dovecot's physical and virtual sizes are both the row's
	   virtual_size, the message's CRLF size. */
	const struct sqlbox_row *row;
	pool_t row_pool;
	/* the pool of the same message's row read before without its
	   parsed fields: what the mail gave out from it stays valid until
	   the mail closes */
	pool_t prev_row_pool;
	/* the header stream made from the kept header lines */
	struct istream *header_stream;
};

#define SQLBOX_MAIL(m) (container_of(m, struct sqlbox_mail, imail.mail.mail))

struct mail *
sqlbox_mail_alloc(struct mailbox_transaction_context *t,
		  enum mail_fetch_field wanted_fields,
		  struct mailbox_header_lookup_ctx *wanted_headers)
{
	struct sqlbox_mail *mail;
	pool_t pool;

	pool = pool_alloconly_create("mail", 2048);
	mail = p_new(pool, struct sqlbox_mail, 1);
	index_mail_init(&mail->imail, t, wanted_fields, wanted_headers,
			pool, NULL);
	return &mail->imail.mail.mail;
}

static void sqlbox_mail_close(struct mail *_mail)
{
	struct sqlbox_mail *mail = SQLBOX_MAIL(_mail);

	i_stream_unref(&mail->header_stream);
	mail->row = NULL;
	if (mail->row_pool != NULL)
		pool_unref(&mail->row_pool);
	if (mail->prev_row_pool != NULL)
		pool_unref(&mail->prev_row_pool);
	index_mail_close(_mail);
}

/* Loads the message's row, with its parsed fields if with_parsed.
   Returns 0, or -1 with the mail marked expunged (no row) or the error
   set. */
static int sqlbox_mail_lookup(struct sqlbox_mail *mail, bool with_parsed)
{
	struct mail *_mail = &mail->imail.mail.mail;
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(_mail->box);
	const struct sqlbox_row *row;
	pool_t pool;
	int ret;

	if (mail->row != NULL && mail->row->uid == _mail->uid &&
	    (mail->row->have_parsed || !with_parsed))
		return 0;
	/* a row lookup is metadata access: callers that allow only cached
	   data (MAIL_LOOKUP_ABORT_NOT_IN_CACHE) get "aborted". This is
	   mail_metadata_access_start() without its mail event, which costs
	   more than the row itself (a POP3 LIST of 100,000 made as many
	   events); mail_event() makes it when something logs. */
	if (_mail->lookup_abort >= MAIL_LOOKUP_ABORT_NOT_IN_CACHE) {
		mail_set_aborted(_mail);
		return -1;
	}
	_mail->mail_metadata_accessed = TRUE;
	ret = sqlbox_rows_lookup(mbox, _mail->uid, with_parsed, &row, &pool);
	if (ret < 0) {
		sqlbox_set_box_error(_mail->box, sqlbox_mailbox_get_db(mbox));
		return -1;
	}
	if (ret == 0) {
		mail_set_expunged(_mail);
		return -1;
	}
	if (mail->row != NULL && mail->row->uid == _mail->uid) {
		/* read again with the parsed fields */
		i_assert(mail->prev_row_pool == NULL);
		mail->prev_row_pool = mail->row_pool;
	} else if (mail->row_pool != NULL) {
		pool_unref(&mail->row_pool);
	}
	mail->row = row;
	mail->row_pool = pool;
	return 0;
}

static int sqlbox_mail_get_received_date(struct mail *_mail, time_t *date_r)
{
	struct sqlbox_mail *mail = SQLBOX_MAIL(_mail);

	if (_mail->saving)
		return index_mail_get_received_date(_mail, date_r);
	if (sqlbox_mail_lookup(mail, FALSE) < 0)
		return -1;
	mail->imail.data.received_date = mail->row->received_date;
	*date_r = mail->row->received_date;
	return 0;
}

static int sqlbox_mail_get_save_date(struct mail *_mail, time_t *date_r)
{
	struct sqlbox_mail *mail = SQLBOX_MAIL(_mail);

	if (_mail->saving)
		return index_mail_get_save_date(_mail, date_r);
	if (sqlbox_mail_lookup(mail, FALSE) < 0)
		return -1;
	mail->imail.data.save_date = mail->row->save_date;
	*date_r = mail->row->save_date;
	return 0;
}

/* Bodies are stored with CRLF line endings, so the physical and the
   virtual size are the same number, and it is a column (the message's
   size, not the stored bytes, which zlib or mail_crypt may shrink or
   grow). */
static int sqlbox_mail_get_size(struct mail *_mail, uoff_t *size_r)
{
	struct sqlbox_mail *mail = SQLBOX_MAIL(_mail);
	struct index_mail_data *data = &mail->imail.data;

	if (_mail->saving) {
		if (sqlbox_save_get_size(_mail->transaction, _mail->seq,
					 size_r)) {
			data->physical_size = data->virtual_size = *size_r;
			return 0;
		}
		return index_mail_get_physical_size(_mail, size_r);
	}
	if (mail->row == NULL || mail->row->uid != _mail->uid) {
		const struct sqlbox_row_summary *summary =
			sqlbox_rows_summary(SQLBOX_MAILBOX(_mail->box),
					    _mail->uid);

		if (summary != NULL) {
			data->physical_size = data->virtual_size =
				summary->virtual_size;
			*size_r = summary->virtual_size;
			return 0;
		}
	}
	if (sqlbox_mail_lookup(mail, FALSE) < 0)
		return -1;
	data->physical_size = data->virtual_size = mail->row->virtual_size;
	*size_r = mail->row->virtual_size;
	return 0;
}

static int
sqlbox_mail_get_stream(struct mail *_mail, bool get_body ATTR_UNUSED,
		       struct message_size *hdr_size,
		       struct message_size *body_size,
		       struct istream **stream_r)
{
	struct sqlbox_mail *mail = SQLBOX_MAIL(_mail);
	struct index_mail_data *data = &mail->imail.data;
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(_mail->box);
	struct istream *input;

	if (data->stream == NULL) {
		if (!mail_stream_access_start(_mail))
			return -1;
		if (_mail->saving) {
			input = sqlbox_save_get_stream(_mail->transaction,
						       _mail->seq);
			if (input == NULL) {
				mail_set_expunged(_mail);
				return -1;
			}
		} else {
			if (sqlbox_mail_lookup(mail, FALSE) < 0)
				return -1;
			input = i_stream_create_sqlbox_body(
				sqlbox_mailbox_get_db(mbox),
				mail->row->body_id, mail->row->size);
			i_stream_set_name(input, t_strdup_printf(
				"sqlbox body %"PRId64, mail->row->body_id));
			/* read the first chunk now, where every caller checks
			   for failure: POP3's RETR doesn't check its stream and
			   would send a broken body as an empty message */
			if (i_stream_read(input) == -1 &&
			    input->stream_errno != 0) {
				if (input->stream_errno == ESTALE)
					mail_set_expunged(_mail);
				else {
					mail_set_critical(_mail, "read(%s) "
						"failed: %s",
						i_stream_get_name(input),
						i_stream_get_error(input));
				}
				i_stream_unref(&input);
				return -1;
			}
			data->physical_size = data->virtual_size =
				mail->row->virtual_size;
		}
		data->stream = input;
		index_mail_set_read_buffer_size(_mail, input);
		if (mail->imail.mail.v.istream_opened != NULL) {
			if (mail->imail.mail.v.istream_opened(_mail,
							      &data->stream) < 0)
				return -1;
		}
	}
	return index_mail_init_stream(&mail->imail, hdr_size, body_size,
				      stream_r);
}

/* Header fields in the kept set come from the kept lines: header SEARCH,
   FETCH BODY[HEADER.FIELDS (...)] and ENVELOPE (which Dovecot builds from
   this stream) read no body. */
static int
sqlbox_mail_get_header_stream(struct mail *_mail,
			      struct mailbox_header_lookup_ctx *headers,
			      struct istream **stream_r)
{
	struct sqlbox_mail *mail = SQLBOX_MAIL(_mail);
	unsigned int i;
	string_t *dest;

	/* a mail being saved has no row yet; a BODYSTRUCTURE being parsed
	   wants index-mail to read the real header */
	if (_mail->saving || mail->imail.data.save_bodystructure_header)
		return index_mail_get_header_stream(_mail, headers, stream_r);
	/* SEARCH's first pass (cached data only) is told "not cached", as
	   on Dovecot's own backends without a cache: a header answer there
	   would settle a SENTBEFORE that the second pass decides from the
	   parsed date instead */
	if (_mail->lookup_abort != MAIL_LOOKUP_ABORT_NEVER) {
		mail_set_aborted(_mail);
		return -1;
	}
	for (i = 0; i < headers->count; i++) {
		if (!sqlbox_parsed_keeps_header(headers->name[i]))
			return index_mail_get_header_stream(_mail, headers,
							    stream_r);
	}
	if (sqlbox_mail_lookup(mail, TRUE) < 0)
		return -1;
	if (mail->row->headers == NULL) {
		/* not kept: parsed from the body */
		return index_mail_get_header_stream(_mail, headers, stream_r);
	}
	dest = str_new(mail->imail.mail.data_pool,
		       mail->row->headers_size + 1);
	if (!sqlbox_parsed_filter_headers(mail->row->headers,
					  mail->row->headers_size,
					  headers->name, headers->count, dest))
		i_unreached();
	i_stream_unref(&mail->header_stream);
	mail->header_stream = i_stream_create_from_data(str_data(dest),
							str_len(dest));
	*stream_r = mail->header_stream;
	return 0;
}

/* BODYSTRUCTURE as the save kept it, and BODY made from it; NULL if the
   save kept none. */
static int sqlbox_mail_get_bodystructure(struct sqlbox_mail *mail,
					 enum mail_fetch_field field,
					 const char **value_r)
{
	struct index_mail_data *data = &mail->imail.data;
	const char *error;
	string_t *body;

	*value_r = NULL;
	if (data->bodystructure == NULL) {
		if (sqlbox_mail_lookup(mail, TRUE) < 0)
			return -1;
		if (mail->row->bodystructure == NULL)
			return 0;
		data->bodystructure = p_strdup(mail->imail.mail.data_pool,
					       mail->row->bodystructure);
	}
	if (field == MAIL_FETCH_IMAP_BODYSTRUCTURE) {
		*value_r = data->bodystructure;
		return 0;
	}
	if (data->body == NULL) {
		body = str_new(mail->imail.mail.data_pool, 128);
		if (imap_body_parse_from_bodystructure(data->bodystructure,
						       body, &error) < 0) {
			/* a kept value that doesn't parse: parse the body */
			e_warning(mail_event(&mail->imail.mail.mail),
				  "sqlbox: kept BODYSTRUCTURE is invalid: %s",
				  error);
			data->bodystructure = NULL;
			return 0;
		}
		data->body = str_c(body);
	}
	*value_r = data->body;
	return 0;
}

static const char *sqlbox_pop3_order_str(uint32_t pop3_order)
{
	/* unordered mails sort last */
	return pop3_order == 0 ? "" : dec2str(pop3_order);
}

/* POP3's order, and its UIDL when none is stored, from the sync's
   summary of the row: POP3 asks for them for every message at login.
   Returns FALSE when the row is needed. */
static bool
sqlbox_mail_get_pop3_special(struct sqlbox_mail *mail,
			     enum mail_fetch_field field, const char **value_r)
{
	struct mail *_mail = &mail->imail.mail.mail;
	const struct sqlbox_row_summary *summary;

	if (mail->row != NULL && mail->row->uid == _mail->uid)
		return FALSE;
	summary = sqlbox_rows_summary(SQLBOX_MAILBOX(_mail->box), _mail->uid);
	if (summary == NULL)
		return FALSE;
	if (field == MAIL_FETCH_POP3_ORDER) {
		*value_r = sqlbox_pop3_order_str(summary->pop3_order);
		return TRUE;
	}
	if (summary->has_pop3_uidl != 0)
		return FALSE;
	*value_r = "";
	return TRUE;
}

static int
sqlbox_mail_get_special(struct mail *_mail, enum mail_fetch_field field,
			const char **value_r)
{
	struct sqlbox_mail *mail = SQLBOX_MAIL(_mail);

	if (_mail->saving)
		return index_mail_get_special(_mail, field, value_r);

	switch (field) {
	case MAIL_FETCH_IMAP_ENVELOPE:
		if (mail->imail.data.envelope == NULL) {
			if (sqlbox_mail_lookup(mail, TRUE) < 0)
				return -1;
			if (mail->row->envelope == NULL) {
				/* not kept: built from the header */
				return index_mail_get_special(_mail, field,
							      value_r);
			}
			mail->imail.data.envelope = p_strdup(
				mail->imail.mail.data_pool,
				mail->row->envelope);
		}
		*value_r = mail->imail.data.envelope;
		return 0;
	case MAIL_FETCH_IMAP_BODY:
	case MAIL_FETCH_IMAP_BODYSTRUCTURE:
		if (sqlbox_mail_get_bodystructure(mail, field, value_r) < 0)
			return -1;
		if (*value_r != NULL)
			return 0;
		return index_mail_get_special(_mail, field, value_r);
	case MAIL_FETCH_UIDL_BACKEND:
	case MAIL_FETCH_POP3_ORDER:
		if (sqlbox_mail_get_pop3_special(mail, field, value_r))
			return 0;
		/* fall through */
	case MAIL_FETCH_GUID:
	case MAIL_FETCH_FROM_ENVELOPE:
	case MAIL_FETCH_STORAGE_ID:
		if (sqlbox_mail_lookup(mail, FALSE) < 0)
			return -1;
		break;
	default:
		return index_mail_get_special(_mail, field, value_r);
	}

	switch (field) {
	case MAIL_FETCH_GUID:
		*value_r = mail->row->guid;
		return 0;
	case MAIL_FETCH_UIDL_BACKEND:
		*value_r = mail->row->pop3_uidl != NULL ?
			mail->row->pop3_uidl : "";
		return 0;
	case MAIL_FETCH_POP3_ORDER:
		*value_r = sqlbox_pop3_order_str(mail->row->pop3_order);
		return 0;
	case MAIL_FETCH_FROM_ENVELOPE:
		*value_r = mail->row->from_envelope != NULL ?
			mail->row->from_envelope : "";
		return 0;
	case MAIL_FETCH_STORAGE_ID:
		*value_r = t_strdup_printf("%"PRId64, mail->row->body_id);
		return 0;
	default:
		i_unreached();
	}
}

/* pop3_save_uidl: POP3 stores the UIDL it showed, so it survives a change
   of pop3_uidl_format or a migration. */
static void sqlbox_mail_update_pop3_uidl(struct mail *_mail, const char *uidl)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(_mail->box);
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	const char *msg;

	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		goto fail;
	if (sbx_msg_set_pop3_uidl(db, mbox->mailbox_id, _mail->uid, uidl) < 0) {
		sbx_tx_rollback(db);
		goto fail;
	}
	if (sbx_tx_commit(db) < 0)
		goto fail;
	/* the rows read before hold the old UIDL */
	sqlbox_rows_forget(mbox);
	sqlbox_rows_summary_set_uidl(mbox, _mail->uid, uidl != NULL);
	SQLBOX_MAIL(_mail)->row = NULL;
	return;
fail:
	/* the vfunc can't fail: the UIDL stays computed from the format */
	(void)sbx_db_last_error(db, &msg);
	mail_set_critical(_mail, "sqlbox: saving the POP3 UIDL failed: %s",
			  msg);
}

struct mail_vfuncs sqlbox_mail_vfuncs = {
	.close = sqlbox_mail_close,
	.free = index_mail_free,
	.set_seq = index_mail_set_seq,
	.set_uid = index_mail_set_uid,
	.set_uid_cache_updates = index_mail_set_uid_cache_updates,
	.prefetch = index_mail_prefetch,
	.precache = index_mail_precache,
	.add_temp_wanted_fields = index_mail_add_temp_wanted_fields,

	.get_flags = index_mail_get_flags,
	.get_keywords = index_mail_get_keywords,
	.get_keyword_indexes = index_mail_get_keyword_indexes,
	.get_modseq = index_mail_get_modseq,
	.get_pvt_modseq = index_mail_get_pvt_modseq,
	.get_parts = index_mail_get_parts,
	.get_date = index_mail_get_date,
	.get_received_date = sqlbox_mail_get_received_date,
	.get_save_date = sqlbox_mail_get_save_date,
	.get_virtual_size = sqlbox_mail_get_size,
	.get_physical_size = sqlbox_mail_get_size,
	.get_first_header = index_mail_get_first_header,
	.get_headers = index_mail_get_headers,
	.get_header_stream = sqlbox_mail_get_header_stream,
	.get_stream = sqlbox_mail_get_stream,
	.get_binary_stream = index_mail_get_binary_stream,
	.get_special = sqlbox_mail_get_special,
	.get_backend_mail = index_mail_get_backend_mail,
	.update_flags = index_mail_update_flags,
	.update_keywords = index_mail_update_keywords,
	.update_modseq = index_mail_update_modseq,
	.update_pvt_modseq = index_mail_update_pvt_modseq,
	.update_pop3_uidl = sqlbox_mail_update_pop3_uidl,
	.expunge = index_mail_expunge,
	.set_cache_corrupted = index_mail_set_cache_corrupted,
	.istream_opened = index_mail_opened,
};
