/* SPDX-License-Identifier: MIT */
/* Saving (APPEND, LMTP, LDA, doveadm save) and copying messages.

   save_begin/continue only spool: the message goes through CRLF
   normalisation (the one place it happens) into a temporary stream, which
   save_finish hashes with SHA-256 and parses for the fields kept with the
   body (sqlbox-parsed.c); its index record is appended with UID 0.
   Nothing touches SQL while a mail is spooled, so no lock is ever held
   while a client sends a literal. In commit_pre, under the write lock:
   the mailbox is pulled (the index must know every UID already given
   out; a mailbox opened only to save learns just UIDNEXT), the new UIDs
   are the next ones after SQL's uidnext, bodies are stored (or found by
   hash and shared) and rows inserted; SQL commits before the index does.

   A transaction that saves many mails (doveadm import, dsync, a large
   MULTIAPPEND) doesn't hold them all until its commit: once its spooled
   mails pass SQLBOX_SAVE_BATCH_BYTES, save_finish writes their bodies in
   a short transaction of their own and drops the spools, so memory and
   open spool files stay bounded however large the transaction. Such a
   body has no reference until the commit inserts its message: other
   writers don't share it (sbx_body_lookup_hash()), purge and check leave
   it alone for a day, and a rollback deletes it. The commit shares an
   identical body stored before instead, deleting its own.

   A COPY or MOVE within the user's database stores no body: sqlbox-copy.c
   inserts rows pointing at the sources' bodies, in the same
   transaction. */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "istream.h"
#include "istream-crlf.h"
#include "ostream.h"
#include "ostream-hash.h"
#include "hash-method.h"
#include "iostream-temp.h"
#include "seq-range-array.h"
#include "str.h"
#include "guid.h"
#include "mail-user.h"
#include "mail-index-transaction-private.h"
#include "message-header-parser.h"
#include "index-mail.h"
#include "sbx-body.h"
#include "sbx-db.h"
#include "sbx-hash.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "sqlbox-error.h"
#include "sqlbox-settings.h"
#include "sqlbox-parsed.h"
#include "sqlbox-storage.h"
#include "sqlbox-sync.h"
#include "sqlbox-copy.h"
#include "sqlbox-istream.h"
#include "sqlbox-save.h"

struct sqlbox_save_mail {
	uint32_t seq;
	/* the spooled message; NULL while it is being spooled */
	struct istream *input;
	/* the bytes stored (compressed or encrypted by zlib or mail_crypt
	   stacked on top) and the message's own size (CRLF), which is what
	   IMAP, POP3 and quota see */
	uoff_t size;
	uoff_t virtual_size;
	uint8_t sha256[SBX_SHA256_SIZE];

	const char *guid;
	uint32_t flags;
	const char *keywords;
	time_t received_date, save_date;
	int received_tz;
	const char *pop3_uidl;
	uint32_t pop3_order;
	const char *from_envelope;
	const char *message_id;
	/* dsync: the source's MODSEQ, which the copy must not go below */
	uint64_t min_modseq;
	/* a save's parsed fields, kept with its body */
	struct sqlbox_parsed parsed;
	bool have_parsed;
	/* spooled whole: save_finish succeeded */
	bool finished;
	/* the body, once written ahead of the commit (input is then NULL);
	   0 until then */
	int64_t body_id;
};

struct sqlbox_save_context {
	struct mail_save_context ctx;
	struct sqlbox_mailbox *mbox;
	struct mail_index_transaction *trans;
	pool_t pool;

	ARRAY(struct sqlbox_save_mail) mails;
	/* COPY and MOVE within the database (sqlbox-copy.c) */
	struct sqlbox_copy_context *copies;
	/* saves that found their Message-ID in \Sent already: the UIDs of
	   the copies kept instead (UIDPLUS reports them) */
	ARRAY_TYPE(seq_range) dedup_uids;
	/* the mail being saved, its spooling input, the spool itself and
	   the stream hashing what goes into it (data.output, unless zlib
	   or mail_crypt wrapped it) */
	struct istream *input;
	struct ostream *spool, *hashing;
	struct sbx_hash *hash;
	uint32_t seq;
	/* the mailbox's pull cursor after commit_pre's pull, and SQL's
	   highest MODSEQ after its inserts: with nothing pulled in between,
	   commit_post moves the cursor past the rows the index now has */
	uint64_t cursor_before, highest_after;
	/* the parsed fields of mails whose body isn't written yet, freed
	   with each batch; and the bytes of those mails' spools */
	pool_t parsed_pool;
	uoff_t unwritten_bytes;

	bool failed:1;
	/* a batch failed to write: the rest waits for the commit */
	bool batch_failed:1;
};

/* Spooled bytes of a transaction's mails past which save_finish writes
   their bodies ahead of the commit. */
#define SQLBOX_SAVE_BATCH_BYTES (4 * 1024 * 1024)

#define SQLBOX_SAVECTX(s) (container_of(s, struct sqlbox_save_context, ctx))

struct mail_save_context *
sqlbox_save_alloc(struct mailbox_transaction_context *t)
{
	struct sqlbox_save_context *ctx;

	i_assert((t->flags & MAILBOX_TRANSACTION_FLAG_EXTERNAL) != 0);

	if (t->save_ctx != NULL) {
		ctx = SQLBOX_SAVECTX(t->save_ctx);
		ctx->failed = FALSE;
		return t->save_ctx;
	}
	ctx = i_new(struct sqlbox_save_context, 1);
	ctx->ctx.transaction = t;
	ctx->mbox = SQLBOX_MAILBOX(t->box);
	ctx->trans = t->itrans;
	ctx->pool = pool_alloconly_create("sqlbox save", 4096);
	ctx->parsed_pool = pool_alloconly_create("sqlbox save parsed", 4096);
	p_array_init(&ctx->mails, ctx->pool, 32);
	t->save_ctx = &ctx->ctx;
	return t->save_ctx;
}

/* The keywords of a mail_keywords as SQL stores them. */
static const char *
sqlbox_save_keywords(struct sqlbox_save_context *ctx,
		     const struct mail_keywords *keywords)
{
	const ARRAY_TYPE(keywords) *all =
		mail_index_get_keywords(ctx->mbox->box.index);
	string_t *str;
	unsigned int i;

	if (keywords == NULL || keywords->count == 0)
		return "";
	str = t_str_new(64);
	for (i = 0; i < keywords->count; i++) {
		if (i > 0)
			str_append_c(str, ' ');
		str_append(str, array_idx_elem(all, keywords->idx[i]));
	}
	return str_c(str);
}

/* Appends the index record of a new mail and fills the parts of its
   record that come from the save data. */
static struct sqlbox_save_mail *
sqlbox_save_add(struct sqlbox_save_context *ctx)
{
	struct mail_save_data *mdata = &ctx->ctx.data;
	struct sqlbox_save_mail *smail;

	smail = array_append_space(&ctx->mails);
	mail_index_append(ctx->trans, mdata->uid, &smail->seq);
	mail_index_update_flags(ctx->trans, smail->seq, MODIFY_REPLACE,
				mdata->flags & ENUM_NEGATE(MAIL_RECENT));
	if (mdata->keywords != NULL) {
		mail_index_update_keywords(ctx->trans, smail->seq,
					   MODIFY_REPLACE, mdata->keywords);
	}
	smail->min_modseq = mdata->min_modseq;
	ctx->seq = smail->seq;

	smail->flags = mdata->flags & SBX_FLAGS_MASK;
	smail->keywords = p_strdup(ctx->pool,
				   sqlbox_save_keywords(ctx, mdata->keywords));
	return smail;
}

/* Copies what the commit needs from the save data, which
   index_save_context_free() clears. */
static void sqlbox_save_set_data(struct sqlbox_save_context *ctx,
				 struct sqlbox_save_mail *smail)
{
	struct mail_save_data *mdata = &ctx->ctx.data;
	guid_128_t guid;

	if (mdata->guid != NULL && *mdata->guid != '\0')
		smail->guid = p_strdup(ctx->pool, mdata->guid);
	else {
		guid_128_generate(guid);
		smail->guid = p_strdup(ctx->pool, guid_128_to_string(guid));
	}
	smail->received_date = mdata->received_date != (time_t)-1 ?
		mdata->received_date : ioloop_time;
	smail->received_tz = mdata->received_tz_offset;
	smail->save_date = mdata->save_date != (time_t)-1 ?
		mdata->save_date : ioloop_time;
	smail->pop3_uidl = p_strdup_empty(ctx->pool, mdata->pop3_uidl);
	smail->pop3_order = mdata->pop3_order;
	smail->from_envelope = p_strdup_empty(ctx->pool, mdata->from_envelope);
}

/* SHA-256 of what is spooled (the stored bytes), for sharing identical
   bodies: o_stream_create_hash() calls only loop. */
static void sqlbox_save_hash_loop(void *context, const void *data,
				  size_t size)
{
	struct sqlbox_save_context *ctx = context;

	sbx_hash_update(ctx->hash, data, size);
}

static const struct hash_method sqlbox_save_hash_method = {
	.name = "sqlbox-sha256",
	.digest_size = SBX_SHA256_SIZE,
	.loop = sqlbox_save_hash_loop,
};

int sqlbox_save_begin(struct mail_save_context *_ctx, struct istream *input)
{
	struct sqlbox_save_context *ctx = SQLBOX_SAVECTX(_ctx);
	struct mail_user *user = _ctx->transaction->box->storage->user;
	struct istream *crlf_input;
	struct ostream *spool;
	string_t *temp_prefix = t_str_new(128);

	ctx->failed = FALSE;
	(void)sqlbox_save_add(ctx);
	mail_set_seq_saving(_ctx->dest_mail, ctx->seq);

	/* the one place line endings become CRLF */
	crlf_input = i_stream_create_crlf(input);
	ctx->input = index_mail_cache_parse_init(_ctx->dest_mail, crlf_input);
	i_stream_unref(&crlf_input);

	mail_user_set_get_temp_prefix(temp_prefix, user->set);
	spool = iostream_temp_create_named(str_c(temp_prefix), 0,
					   "sqlbox save");
	/* hashed on the way in: reading a spool that went to a file again
	   only to hash it cost a pass over every large message */
	ctx->hash = sbx_hash_alloc();
	if (ctx->hash == NULL)
		i_fatal_status(FATAL_OUTOFMEM, "sqlbox: SHA-256 unavailable");
	ctx->hashing = o_stream_create_hash(spool, &sqlbox_save_hash_method,
					    ctx);
	/* the hashing stream holds the spool; ctx->spool only points at it */
	ctx->spool = spool;
	o_stream_unref(&spool);
	_ctx->data.output = ctx->hashing;
	if (_ctx->data.received_date == (time_t)-1)
		_ctx->data.received_date = ioloop_time;
	return 0;
}

int sqlbox_save_continue(struct mail_save_context *_ctx)
{
	struct sqlbox_save_context *ctx = SQLBOX_SAVECTX(_ctx);
	const struct sqlbox_settings *set =
		sqlbox_mailbox_get_settings(ctx->mbox);

	if (ctx->failed)
		return -1;
	if (index_storage_save_continue(_ctx, ctx->input,
					_ctx->dest_mail) < 0) {
		ctx->failed = TRUE;
		return -1;
	}
	if (set->max_message_size != 0 &&
	    ctx->input->v_offset > set->max_message_size) {
		mail_storage_set_error(_ctx->transaction->box->storage,
			MAIL_ERROR_LIMIT, t_strdup_printf(
				"Message is larger than %"PRIuUOFF_T" bytes",
				set->max_message_size));
		ctx->failed = TRUE;
		return -1;
	}
	return 0;
}

/* The Message-ID header of a spooled message, for the Sent-copy dedup.
   Read from the spool (or, when zlib or mail_crypt transformed the spool,
   from the mail's stream, which undoes that). */
static const char *sqlbox_save_get_message_id(struct istream *spool)
{
	struct message_header_parser_ctx *parser;
	struct message_header_line *hdr;
	struct istream *input;
	const char *value = NULL;

	/* a limit stream starts where its parent is: at the start */
	i_stream_seek(spool, 0);
	input = i_stream_create_limit(spool, UOFF_T_MAX);
	parser = message_parse_header_init(input, NULL,
					   MESSAGE_HEADER_PARSER_FLAG_CLEAN_ONELINE);
	while (message_parse_header_next(parser, &hdr) > 0) {
		if (hdr->eoh)
			break;
		if (hdr->continues) {
			hdr->use_full_value = TRUE;
			continue;
		}
		if (strcasecmp(hdr->name, "Message-ID") == 0) {
			value = t_str_trim(t_strndup(hdr->full_value,
						     hdr->full_value_len),
					   " \t");
			break;
		}
	}
	message_parse_header_deinit(&parser);
	i_stream_unref(&input);
	return value == NULL || *value == '\0' ? NULL : value;
}

/* Parses a spooled message (its plaintext) for the fields kept with its
   body. Returns 0, or -1 with the mail's error set. */
static int sqlbox_save_parse(struct sqlbox_save_context *ctx,
			     struct sqlbox_save_mail *smail,
			     struct istream *plain)
{
	struct mail *mail = ctx->ctx.dest_mail;
	struct istream *input;
	const char *error;
	int ret;

	if (!sqlbox_parsed_allowed(ctx->mbox->box.storage->user))
		return 0;
	/* a limit stream starts where its parent is: at the start */
	i_stream_seek(plain, 0);
	input = i_stream_create_limit(plain, UOFF_T_MAX);
	ret = sqlbox_parsed_parse(input, ctx->parsed_pool, &smail->parsed,
				  &error);
	i_stream_unref(&input);
	if (ret < 0) {
		mail_set_critical(mail, "sqlbox: %s", error);
		return -1;
	}
	smail->have_parsed = TRUE;
	return 0;
}

/* The Sent-copy dedup (DESIGN.md section 6): a save into the \Sent
   special-use mailbox whose Message-ID was saved there within
   sqlbox_sent_dedup_window is the same message sent twice, once by the
   submission service and once by the client's own APPEND. Only saves are
   deduplicated (never COPY, MOVE or a dsync transaction, so replication
   stays exact), and never a message without a Message-ID. The check runs
   before the write lock: the two saves of one message follow each other
   (the client appends after its 250), they do not race. Returns TRUE with
   *uid_r set to the copy to keep. */
static bool sqlbox_save_is_sent_duplicate(struct sqlbox_save_context *ctx,
					  const struct sqlbox_save_mail *smail,
					  uint32_t *uid_r)
{
	struct mailbox *box = &ctx->mbox->box;
	const struct sqlbox_settings *set =
		sqlbox_mailbox_get_settings(ctx->mbox);
	const char *const *uses;
	int ret;

	if (set->sent_dedup_window_secs == 0 || smail->message_id == NULL ||
	    ctx->ctx.data.uid != 0 ||
	    (ctx->ctx.transaction->flags & MAILBOX_TRANSACTION_FLAG_SYNC) != 0)
		return FALSE;
	if (box->set == NULL || box->set->special_use == NULL)
		return FALSE;
	uses = t_strsplit_spaces(box->set->special_use, " ");
	if (!str_array_icase_find(uses, "\\Sent"))
		return FALSE;
	ret = sbx_msg_lookup_message_id(sqlbox_mailbox_get_db(ctx->mbox),
		ctx->mbox->mailbox_id, smail->message_id,
		(int64_t)ioloop_time - set->sent_dedup_window_secs, uid_r);
	if (ret < 0) {
		/* a failed lookup only costs the dedup: save the copy */
		const char *msg;

		(void)sbx_db_last_error(sqlbox_mailbox_get_db(ctx->mbox), &msg);
		e_error(box->event, "sqlbox: Sent dedup lookup failed: %s", msg);
		return FALSE;
	}
	return ret > 0;
}

/* Keeps a save's parsed fields with body_id (one that has its own keeps
   them). Returns 0, or -1 with the error in the database handle. */
static int sqlbox_save_keep_parsed(struct sbx_db *db,
				   const struct sqlbox_save_mail *smail,
				   int64_t body_id)
{
	if (!smail->have_parsed)
		return 0;
	return sbx_body_set_parsed(db, body_id, smail->parsed.headers,
				   smail->parsed.headers_size,
				   smail->parsed.bodystructure,
				   smail->parsed.envelope);
}

/* Writes a spooled mail's body, and its parsed fields, as a body no
   message uses yet. The caller holds an SBX_TX_WRITE transaction.
   Returns 0, -1 with the error in the database handle, or -2 with the
   error set on the mailbox. */
static int sqlbox_save_write_body(struct sqlbox_save_context *ctx,
				  struct sqlbox_save_mail *smail,
				  int64_t *body_id_r)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(ctx->mbox);
	struct sbx_body_writer *writer;
	const unsigned char *data;
	size_t size;
	ssize_t ret;

	if (sbx_body_writer_open(db, smail->sha256, smail->size,
				 smail->virtual_size, &writer) < 0)
		return -1;
	i_stream_seek(smail->input, 0);
	while ((ret = i_stream_read_more(smail->input, &data, &size)) > 0) {
		if (sbx_body_writer_write(writer, data, size) < 0) {
			sbx_body_writer_abort(&writer);
			return -1;
		}
		i_stream_skip(smail->input, size);
	}
	if (smail->input->stream_errno != 0) {
		sbx_body_writer_abort(&writer);
		mailbox_set_critical(&ctx->mbox->box,
			"sqlbox: read(%s) failed: %s",
			i_stream_get_name(smail->input),
			i_stream_get_error(smail->input));
		return -2;
	}
	if (sbx_body_writer_close(&writer, body_id_r) < 0)
		return -1;
	return sqlbox_save_keep_parsed(db, smail, *body_id_r);
}

/* Writes the bodies of the mails spooled so far in a transaction of their
   own, which commits without a sync: the commit that references them
   syncs them too. Their spools and parsed fields are then dropped. A
   failure only keeps them for the commit (which will likely fail the
   same way and say why); it is logged once, and no batch is tried again
   in this transaction. */
static void sqlbox_save_write_batch(struct sqlbox_save_context *ctx)
{
	struct mailbox *box = &ctx->mbox->box;
	struct sbx_db *db = sqlbox_mailbox_get_db(ctx->mbox);
	struct sqlbox_save_mail *smail;
	const char *msg;
	int ret = 0;

	/* a transaction of our own can't begin inside another */
	if (sbx_tx_is_active(db))
		return;
	if (sbx_tx_begin(db, SBX_TX_WRITE_LAZY) < 0)
		ret = -1;
	array_foreach_modifiable(&ctx->mails, smail) {
		if (ret < 0)
			break;
		if (smail->input != NULL && smail->body_id == 0)
			ret = sqlbox_save_write_body(ctx, smail,
						     &smail->body_id);
	}
	if (ret == 0 && sbx_tx_commit(db) < 0)
		ret = -1;
	if (ret < 0) {
		if (ret == -1) {
			(void)sbx_db_last_error(db, &msg);
		} else {
			msg = mailbox_get_last_internal_error(box, NULL);
		}
		sbx_tx_rollback(db);
		e_warning(box->event, "sqlbox: writing saved mails' bodies "
			  "ahead of the commit failed, keeping them until "
			  "it: %s", msg);
		array_foreach_modifiable(&ctx->mails, smail) {
			if (smail->input != NULL)
				smail->body_id = 0;
		}
		ctx->batch_failed = TRUE;
		return;
	}
	array_foreach_modifiable(&ctx->mails, smail) {
		if (smail->input != NULL && smail->body_id != 0) {
			i_stream_unref(&smail->input);
			smail->have_parsed = FALSE;
		}
	}
	p_clear(ctx->parsed_pool);
	ctx->unwritten_bytes = 0;
}

/* Deletes the bodies written ahead of a commit that won't come. One that
   can't be deleted now stays until a purge, a day later. */
static void sqlbox_save_delete_written(struct sqlbox_save_context *ctx)
{
	struct mailbox *box = &ctx->mbox->box;
	struct sbx_db *db = sqlbox_mailbox_get_db(ctx->mbox);
	const struct sqlbox_save_mail *smail;
	unsigned int count = 0;
	const char *msg;

	array_foreach(&ctx->mails, smail) {
		if (smail->body_id != 0)
			count++;
	}
	if (count == 0)
		return;
	if (sbx_tx_is_active(db)) {
		e_warning(box->event, "sqlbox: %u bodies written for a "
			  "transaction rolled back stay until a purge", count);
		return;
	}
	if (sbx_tx_begin(db, SBX_TX_WRITE_LAZY) == 0) {
		int ret = 0;

		array_foreach(&ctx->mails, smail) {
			if (smail->body_id != 0 && ret >= 0) {
				ret = sbx_body_delete_unused(db,
							     smail->body_id);
			}
		}
		if (ret >= 0 && sbx_tx_commit(db) == 0)
			return;
		sbx_tx_rollback(db);
	}
	(void)sbx_db_last_error(db, &msg);
	e_error(box->event, "sqlbox: %u bodies written for a transaction "
		"rolled back stay until a purge: %s", count, msg);
}

int sqlbox_save_finish(struct mail_save_context *_ctx)
{
	struct sqlbox_save_context *ctx = SQLBOX_SAVECTX(_ctx);
	struct sqlbox_save_mail *smail;
	struct istream *input = NULL, *plain = NULL;
	const char *message_id;
	uint32_t dup_uid;
	bool spool_wrapped;

	if (_ctx->data.output == NULL) {
		/* save_begin never ran: a plugin stacked over us (quota)
		   refused the mail and mailbox_save_begin() cancels it */
		i_assert(ctx->input == NULL);
		index_save_context_free(_ctx);
		return -1;
	}
	smail = array_back_modifiable(&ctx->mails);
	i_assert(smail->seq == ctx->seq);
	if (!ctx->failed && o_stream_finish(_ctx->data.output) < 0) {
		mail_set_critical(_ctx->dest_mail, "sqlbox: write(%s) failed: %s",
				  o_stream_get_name(_ctx->data.output),
				  o_stream_get_error(_ctx->data.output));
		ctx->failed = TRUE;
	}
	/* zlib or mail_crypt may have wrapped the spool's hashing stream
	   (and have written their trailers): back to the spool */
	spool_wrapped = _ctx->data.output != ctx->hashing;
	o_stream_ref(ctx->spool);
	o_stream_destroy(&_ctx->data.output);
	_ctx->data.output = ctx->spool;
	ctx->spool = NULL;
	ctx->hashing = NULL;
	sbx_hash_final(ctx->hash, smail->sha256);
	sbx_hash_free(&ctx->hash);
	if (!ctx->failed)
		input = iostream_temp_finish(&_ctx->data.output, IO_BLOCK_SIZE);
	else
		o_stream_destroy(&_ctx->data.output);
	index_mail_cache_parse_deinit(_ctx->dest_mail,
				      _ctx->data.received_date, !ctx->failed);
	/* everything the CRLF stream gave went to the spool */
	smail->virtual_size = ctx->input->v_offset;
	i_stream_unref(&ctx->input);

	if (!ctx->failed) {
		smail->input = input;
		if (i_stream_get_size(input, TRUE, &smail->size) <= 0) {
			mail_set_critical(_ctx->dest_mail,
				"sqlbox: size of the spooled message unknown");
			ctx->failed = TRUE;
		}
	}
	if (!ctx->failed && spool_wrapped &&
	    mail_get_stream(_ctx->dest_mail, NULL, NULL, &plain) < 0)
		ctx->failed = TRUE;
	if (!ctx->failed && sqlbox_save_parse(ctx, smail, spool_wrapped ?
					      plain : smail->input) < 0)
		ctx->failed = TRUE;
	if (!ctx->failed) {
		sqlbox_save_set_data(ctx, smail);
		message_id = sqlbox_save_get_message_id(spool_wrapped ? plain :
							smail->input);
		smail->message_id = p_strdup(ctx->pool, message_id);
		if (sqlbox_save_is_sent_duplicate(ctx, smail, &dup_uid)) {
			/* the first copy is kept; this save stores nothing */
			i_stream_unref(&smail->input);
			index_storage_save_abort_last(_ctx, smail->seq);
			array_pop_back(&ctx->mails);
			if (!array_is_created(&ctx->dedup_uids))
				p_array_init(&ctx->dedup_uids, ctx->pool, 4);
			seq_range_array_add(&ctx->dedup_uids, dup_uid);
		} else {
			smail->finished = TRUE;
			ctx->unwritten_bytes += smail->size;
		}
	} else {
		i_stream_unref(&smail->input);
		index_storage_save_abort_last(_ctx, smail->seq);
		array_pop_back(&ctx->mails);
	}
	index_save_context_free(_ctx);
	if (ctx->failed)
		return -1;
	/* a lone mail, however large, waits for its commit: one
	   transaction, and nothing written that isn't referenced */
	if (ctx->unwritten_bytes >= SQLBOX_SAVE_BATCH_BYTES &&
	    array_count(&ctx->mails) > 1 && !ctx->batch_failed)
		sqlbox_save_write_batch(ctx);
	return 0;
}

void sqlbox_save_cancel(struct mail_save_context *_ctx)
{
	struct sqlbox_save_context *ctx = SQLBOX_SAVECTX(_ctx);

	ctx->failed = TRUE;
	(void)sqlbox_save_finish(_ctx);
}

struct sqlbox_copy_context **
sqlbox_save_get_copies(struct mail_save_context *ctx)
{
	return &SQLBOX_SAVECTX(ctx)->copies;
}

struct istream *
sqlbox_save_get_stream(struct mailbox_transaction_context *t, uint32_t seq)
{
	struct sqlbox_save_context *ctx;
	const struct sqlbox_save_mail *smail;
	struct istream *input;

	if (t->save_ctx == NULL)
		return NULL;
	ctx = SQLBOX_SAVECTX(t->save_ctx);
	input = sqlbox_copy_get_stream(ctx->copies, ctx->mbox, seq);
	if (input != NULL)
		return input;
	array_foreach(&ctx->mails, smail) {
		if (smail->seq != seq)
			continue;
		if (smail->body_id != 0 && smail->input == NULL) {
			/* written ahead of the commit */
			return i_stream_create_sqlbox_body(
				sqlbox_mailbox_get_db(ctx->mbox),
				smail->body_id, smail->size);
		}
		if (smail->input == NULL)
			return NULL;	/* still being spooled */
		/* a limit stream starts where its parent is: at the start */
		i_stream_seek(smail->input, 0);
		return i_stream_create_limit(smail->input, UOFF_T_MAX);
	}
	return NULL;
}

bool sqlbox_save_get_size(struct mailbox_transaction_context *t,
			  uint32_t seq, uoff_t *size_r)
{
	struct sqlbox_save_context *ctx;
	const struct sqlbox_save_mail *smail;

	if (t->save_ctx == NULL)
		return FALSE;
	ctx = SQLBOX_SAVECTX(t->save_ctx);
	if (sqlbox_copy_get_size(ctx->copies, ctx->mbox, seq, size_r))
		return TRUE;
	array_foreach(&ctx->mails, smail) {
		if (smail->seq == seq && smail->finished) {
			*size_r = smail->virtual_size;
			return TRUE;
		}
	}
	return FALSE;
}

/* Stores a mail's body: shares an identical one that a message uses
   (deleting the mail's own if it was written ahead), or keeps the one
   written ahead, or writes it now. Returns 0, -1 with the error in the
   database handle, or -2 with the error set on the mailbox. */
static int sqlbox_save_store_body(struct sqlbox_save_context *ctx,
				  struct sqlbox_save_mail *smail,
				  int64_t *body_id_r)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(ctx->mbox);
	int ret;

	ret = sbx_body_lookup_hash(db, smail->sha256, smail->size, body_id_r);
	if (ret < 0)
		return -1;
	if (ret == 0) {
		if (smail->body_id == 0)
			return sqlbox_save_write_body(ctx, smail, body_id_r);
		*body_id_r = smail->body_id;
		return 0;
	}
	/* smail->body_id stays: a rollback of this transaction brings the
	   body back, and sqlbox_save_delete_written() must find it */
	if (smail->body_id != 0 && smail->body_id != *body_id_r &&
	    sbx_body_delete_unused(db, smail->body_id) < 0)
		return -1;
	/* the body keeps its own parsed fields, or gets these */
	return sqlbox_save_keep_parsed(db, smail, *body_id_r);
}

/* Inserts one saved message, after the copies below its UID (uid
   (uint32_t)-1 and smail NULL: the copies left). Returns 0, -1 with the
   error in the database handle, -2 with the error already set on the
   mailbox, or SQLBOX_SAVE_EXPUNGED when a copy's source is gone. */
#define SQLBOX_SAVE_EXPUNGED (-3)
static int sqlbox_save_insert(struct sqlbox_save_context *ctx,
			      struct sqlbox_save_mail *smail, uint32_t uid,
			      uint64_t modseq)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(ctx->mbox);
	struct sbx_msg_new msg;
	int ret;

	/* rows go in in ascending UID order */
	ret = sqlbox_copy_insert(ctx->copies, ctx->mbox, ctx->trans, uid,
				 modseq, &ctx->highest_after);
	if (ret <= 0)
		return ret < 0 ? -1 : SQLBOX_SAVE_EXPUNGED;
	if (smail == NULL)
		return 0;
	i_zero(&msg);
	ret = sqlbox_save_store_body(ctx, smail, &msg.body_id);
	if (ret < 0)
		return ret;
	msg.uid = uid;
	msg.guid = smail->guid;
	msg.flags = smail->flags;
	msg.keywords = smail->keywords;
	msg.modseq = I_MAX(modseq, smail->min_modseq);
	msg.received_date = smail->received_date;
	msg.received_tz = smail->received_tz;
	msg.save_date = smail->save_date;
	msg.pop3_uidl = smail->pop3_uidl;
	msg.pop3_order = smail->pop3_order;
	msg.from_envelope = smail->from_envelope;
	msg.message_id = smail->message_id;
	if (sbx_msg_append(db, ctx->mbox->mailbox_id, &msg) < 0)
		return -1;
	/* the record's MODSEQ is SQL's: exported after the append, the
	   update raises the index's own count to it */
	mail_index_update_modseq(ctx->trans, smail->seq, msg.modseq);
	ctx->highest_after = I_MAX(ctx->highest_after, msg.modseq);
	return 0;
}

struct sqlbox_save_uid {
	uint32_t uid;
	struct sqlbox_save_mail *smail;
};

static int sqlbox_save_uid_cmp(const struct sqlbox_save_uid *a,
			       const struct sqlbox_save_uid *b)
{
	return a->uid < b->uid ? -1 : (a->uid > b->uid ? 1 : 0);
}

/* A transaction whose every save was a Sent duplicate stores nothing;
   UIDPLUS still names the copies kept (APPENDUID). */
static int sqlbox_save_report_dedup(struct sqlbox_save_context *ctx)
{
	struct mailbox_transaction_context *t = ctx->ctx.transaction;
	struct sbx_db *db = sqlbox_mailbox_get_db(ctx->mbox);
	struct sbx_mailbox row;
	int ret;

	if (!array_is_created(&ctx->dedup_uids))
		return 0;
	ret = sbx_mailbox_lookup_id(db, ctx->mbox->mailbox_id, &row);
	if (ret <= 0) {
		if (ret == 0)
			mailbox_set_deleted(&ctx->mbox->box);
		else
			sqlbox_set_box_error(&ctx->mbox->box, db);
		sqlbox_transaction_save_rollback(&ctx->ctx);
		return -1;
	}
	t->changes->uid_validity = row.uidvalidity;
	seq_range_array_merge(&t->changes->saved_uids, &ctx->dedup_uids);
	return 0;
}

int sqlbox_transaction_save_commit_pre(struct mail_save_context *_ctx)
{
	struct sqlbox_save_context *ctx = SQLBOX_SAVECTX(_ctx);
	struct mailbox_transaction_context *t = _ctx->transaction;
	struct sqlbox_mailbox *mbox = ctx->mbox;
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	struct sqlbox_save_mail *smail;
	struct sbx_mailbox row;
	ARRAY(struct sqlbox_save_uid) uids;
	struct sqlbox_save_uid *su;
	uint64_t modseq;
	int ret;

	if (array_count(&ctx->mails) == 0 && ctx->copies == NULL)
		return sqlbox_save_report_dedup(ctx);

	/* new mail is on disk when the commit returns; COPY and MOVE bring
	   none, and commit as lazily as a flag change */
	if (sbx_tx_begin(db, array_count(&ctx->mails) > 0 ? SBX_TX_WRITE :
			 SBX_TX_WRITE_LAZY) < 0) {
		sqlbox_set_box_error(&mbox->box, db);
		sqlbox_transaction_save_rollback(_ctx);
		return -1;
	}
	/* every UID SQL gave out must be in the index before ours */
	if (sqlbox_sync(mbox, SQLBOX_SYNC_FLAG_IN_WRITE_TX) < 0)
		goto fail_quiet;
	ret = sbx_mailbox_lookup_id(db, mbox->mailbox_id, &row);
	if (ret <= 0) {
		if (ret == 0)
			mailbox_set_deleted(&mbox->box);
		goto fail;
	}
	if (sbx_mailbox_modseq_alloc(db, mbox->mailbox_id, &modseq) < 0)
		goto fail;
	ctx->cursor_before = mbox->pulled_modseq;
	ctx->highest_after = modseq;

	mail_index_append_finish_uids(ctx->trans, row.uidnext,
				      &t->changes->saved_uids);
	/* UIDs a save asked for (dsync) are kept when not below uidnext,
	   in any order: rows go in ascending, as UIDs are never reused */
	t_array_init(&uids, array_count(&ctx->mails) + 1);
	array_foreach_modifiable(&ctx->mails, smail) {
		su = array_append_space(&uids);
		su->uid = mail_index_transaction_lookup(ctx->trans,
							smail->seq)->uid;
		su->smail = smail;
	}
	array_sort(&uids, sqlbox_save_uid_cmp);
	/* last, the copies above every save */
	su = array_append_space(&uids);
	su->uid = (uint32_t)-1;
	array_foreach_modifiable(&uids, su) {
		ret = sqlbox_save_insert(ctx, su->smail, su->uid, modseq);
		if (ret == SQLBOX_SAVE_EXPUNGED) {
			/* nothing of this COPY/MOVE batch is kept */
			mail_storage_set_error(mbox->box.storage,
				MAIL_ERROR_EXPUNGED,
				"Some of the requested messages no longer exist");
			goto fail_quiet;
		}
		if (ret == -2)
			goto fail_quiet;
		if (ret < 0)
			goto fail;
	}
	mail_index_update_highest_modseq(ctx->trans, ctx->highest_after);
	if (sbx_tx_commit(db) < 0)
		goto fail_committed;
	t->changes->uid_validity = row.uidvalidity;
	if (array_is_created(&ctx->dedup_uids))
		seq_range_array_merge(&t->changes->saved_uids,
				      &ctx->dedup_uids);
	return 0;

fail:
	sqlbox_set_box_error(&mbox->box, db);
fail_quiet:
	sbx_tx_rollback(db);
	sqlbox_transaction_save_rollback(_ctx);
	return -1;
fail_committed:
	sqlbox_set_box_error(&mbox->box, db);
	sqlbox_transaction_save_rollback(_ctx);
	return -1;
}

static void sqlbox_save_free(struct sqlbox_save_context *ctx)
{
	struct sqlbox_save_mail *smail;

	array_foreach_modifiable(&ctx->mails, smail)
		i_stream_unref(&smail->input);
	i_stream_unref(&ctx->input);
	sqlbox_copy_context_free(&ctx->copies);
	pool_unref(&ctx->parsed_pool);
	pool_unref(&ctx->pool);
	i_free(ctx);
}

void sqlbox_transaction_save_commit_post(struct mail_save_context *_ctx,
	struct mail_index_transaction_commit_result *result ATTR_UNUSED)
{
	struct sqlbox_save_context *ctx = SQLBOX_SAVECTX(_ctx);
	struct sqlbox_mailbox *mbox = ctx->mbox;

	if (ctx->highest_after != 0 &&
	    mbox->pulled_modseq == ctx->cursor_before)
		mbox->pulled_modseq = ctx->highest_after;
	_ctx->transaction = NULL;	/* already freed */
	sqlbox_save_free(ctx);
}

void sqlbox_transaction_save_rollback(struct mail_save_context *_ctx)
{
	struct sqlbox_save_context *ctx = SQLBOX_SAVECTX(_ctx);

	sqlbox_save_delete_written(ctx);
	sqlbox_save_free(ctx);
}
