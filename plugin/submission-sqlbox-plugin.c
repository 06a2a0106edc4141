/* SPDX-License-Identifier: MIT */
/* The submission hook (DESIGN.md section 6): sender ownership at MAIL and
   DATA, per-user rate limits reserved at MAIL and RCPT, a copy into Sent
   after the relay accepted the message, and one audit row per
   transaction.

   Dovecot runs one submission process per connection, so anything shared
   (rate counters, audit) lives in the operator database, where the check
   and the reservation are one write transaction. Per-transaction state is
   reset in cmd_mail and trans_free only: pipelined RCPTs can run before
   trans_start. Work after the relay's reply (REPLIED hook, before the
   client sees it) can no longer change the outcome: the relay has the
   message, so a failed Sent copy or audit row is logged, never turned
   into an SMTP error. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "istream.h"
#include "ioloop.h"
#include "net.h"
#include "module-context.h"
#include "message-header-parser.h"
#include "message-address.h"
#include "smtp-address.h"
#include "mail-user.h"
#include "submission-common.h"
#include "submission-recipient.h"
#include "sbx-db.h"
#include "sbx-submit.h"
#include "submission-sqlbox-settings.h"
#include "submission-sqlbox-sent.h"
#include "submission-sqlbox-plugin.h"

#define SUBMISSION_SQLBOX_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, submission_sqlbox_client_module)

/* What the header of a message says, for the checks and the Sent copy. */
struct submission_sqlbox_headers {
	struct message_address *from, *sender;
	struct message_address *resent_from, *resent_sender;
	bool has_from, has_resent;
	const char *message_id;
	/* lowercased addresses of To, Cc and Bcc, for the Bcc: header */
	ARRAY_TYPE(const_string) listed;
};

struct submission_sqlbox_client {
	union submission_module_context module_ctx;
	struct client *client;
	struct submission_sqlbox_settings set;
	const char *settings_error;

	/* the operator database, opened on first use */
	struct sbx_db *policy_db;
	bool policy_db_failed;

	/* the current transaction, reset in cmd_mail and trans_free */
	pool_t tpool;
	const char *mail_from;
	int64_t bucket;
	unsigned int reserved_msgs, reserved_rcpts;
	unsigned int rcpts;
	struct istream *msg;
	uoff_t msg_offset, msg_size;
	const char *message_id;
	/* the last recipient refused by a limit: a transaction that ends
	   without DATA is audited with it */
	unsigned int refused_status;
	const char *refused_enh, *refused_rule;
	/* DATA began: its reply is audited (submission_sqlbox_data_replied) */
	bool data_started;
	bool completed;
	bool audited;
};

static MODULE_CONTEXT_DEFINE_INIT(submission_sqlbox_client_module,
				  &submission_module_register);

const char *submission_sqlbox_plugin_version = DOVECOT_ABI_VERSION;
const char submission_sqlbox_plugin_binary_dependency[] = "submission";

static struct module *submission_sqlbox_module;
static submission_client_created_func_t *next_hook_client_created;

/* -- the operator database ---------------------------------------------- */

/* The operator database, or NULL with the reason logged. An empty
   submission_sqlbox_policy_db means none: no rate limits, no audit, no
   sender_identity table. */
static struct sbx_db *
submission_sqlbox_policy_db(struct submission_sqlbox_client *sclient)
{
	struct sbx_db_settings dbset;
	const char *msg;

	if (sclient->policy_db != NULL || sclient->policy_db_failed)
		return sclient->policy_db;
	i_zero(&dbset);
	dbset.kind = SBX_DB_KIND_POLICY;
	dbset.lock_timeout_msecs = sclient->set.policy_lock_timeout_msecs;
	if (sbx_db_open(sclient->set.policy_db, &dbset,
			&sclient->policy_db) < 0) {
		(void)sbx_db_last_error(sclient->policy_db, &msg);
		e_error(sclient->client->user->event,
			"sqlbox: submission policy database: %s", msg);
		sbx_db_close(&sclient->policy_db);
		sclient->policy_db_failed = TRUE;
	}
	return sclient->policy_db;
}

static bool submission_sqlbox_has_policy_db(struct submission_sqlbox_client *sclient)
{
	return sclient->set.policy_db[0] != '\0';
}

static void
submission_sqlbox_policy_error(struct submission_sqlbox_client *sclient,
			       const char *what)
{
	const char *msg;

	(void)sbx_db_last_error(sclient->policy_db, &msg);
	e_error(sclient->client->user->event, "sqlbox: %s: %s", what, msg);
}

/* Gives back what the current transaction reserved and did not use. */
static void
submission_sqlbox_release(struct submission_sqlbox_client *sclient)
{
	struct sbx_db *db;

	if (sclient->reserved_msgs == 0 && sclient->reserved_rcpts == 0)
		return;
	db = submission_sqlbox_policy_db(sclient);
	if (db != NULL &&
	    sbx_submit_release(db, sclient->client->user->username,
			       sclient->bucket, sclient->reserved_msgs,
			       sclient->reserved_rcpts, 0) < 0)
		submission_sqlbox_policy_error(sclient,
					       "release rate reservation");
	/* forgotten either way: a release is never given twice */
	sclient->reserved_msgs = 0;
	sclient->reserved_rcpts = 0;
}

static void
submission_sqlbox_audit(struct submission_sqlbox_client *sclient,
			struct smtp_server_transaction *trans,
			unsigned int status, const char *enh_code,
			const char *reply, const char *rule, const char *sent)
{
	struct mail_user *user = sclient->client->user;
	struct sbx_submit_audit a;
	struct sbx_db *db;
	struct smtp_server_recipient *const *rcptp;
	string_t *rcpts = t_str_new(128);

	if (!submission_sqlbox_has_policy_db(sclient) || sclient->audited)
		return;
	sclient->audited = TRUE;
	db = submission_sqlbox_policy_db(sclient);
	if (db == NULL)
		return;
	i_zero(&a);
	a.ts_msecs = (int64_t)ioloop_timeval.tv_sec * 1000 +
		ioloop_timeval.tv_usec / 1000;
	a.username = user->username;
	a.session_id = user->session_id;
	a.remote_ip = user->conn.remote_ip == NULL ? NULL :
		net_ip2addr(user->conn.remote_ip);
	a.tls = user->conn.ssl_secured;
	a.envelope_from = sclient->mail_from;
	if (trans != NULL) {
		array_foreach(&trans->rcpt_to, rcptp) {
			if (str_len(rcpts) > 0)
				str_append(rcpts, ",");
			str_append(rcpts, smtp_address_encode((*rcptp)->path));
		}
		a.rcpt_count = array_count(&trans->rcpt_to);
		a.recipients = str_c(rcpts);
	} else {
		a.rcpt_count = sclient->rcpts;
	}
	a.size = sclient->msg != NULL ? (int64_t)sclient->msg_size : -1;
	a.message_id = sclient->message_id;
	a.status_code = status;
	a.enhanced_code = enh_code;
	a.reply = reply;
	a.rule = rule;
	a.sent = sent;
	if (sbx_submit_audit_add(db, &a, sclient->set.audit_keep_secs == 0 ? 0 :
			a.ts_msecs - (int64_t)sclient->set.audit_keep_secs * 1000)
	    < 0)
		submission_sqlbox_policy_error(sclient, "write audit row");
}

/* -- sender ownership ----------------------------------------------------- */

/* local@domain in lower case without a +detail. */
static const char *submission_sqlbox_address_key(const char *address)
{
	const char *at = strrchr(address, '@'), *plus;
	const char *local;

	if (at == NULL)
		return t_str_lcase(address);
	local = t_strdup_until(address, at);
	plus = strchr(local, '+');
	if (plus != NULL && plus != local)
		local = t_strdup_until(local, plus);
	return t_str_lcase(t_strconcat(local, at, NULL));
}

/* Whether an identity ('a@b', or '@b' for the domain) covers key. */
static bool submission_sqlbox_identity_match(const char *identity,
					     const char *key)
{
	const char *at;

	if (identity[0] == '@') {
		at = strrchr(key, '@');
		return at != NULL && strcasecmp(at, identity) == 0;
	}
	return strcmp(submission_sqlbox_address_key(identity), key) == 0;
}

/* 1 if the user may send as address, 0 if not, -1 if the operator
   database could not tell. */
static int
submission_sqlbox_owns(struct submission_sqlbox_client *sclient,
		       const char *address)
{
	struct mail_user *user = sclient->client->user;
	const char *key = submission_sqlbox_address_key(address);
	const char *const *ids;
	struct sbx_db *db;
	int ret;

	if (strchr(user->username, '@') != NULL &&
	    submission_sqlbox_identity_match(user->username, key))
		return 1;
	ids = t_strsplit_spaces(sclient->set.senders, " ,");
	for (; *ids != NULL; ids++) {
		if (submission_sqlbox_identity_match(*ids, key))
			return 1;
	}
	if (!submission_sqlbox_has_policy_db(sclient))
		return 0;
	db = submission_sqlbox_policy_db(sclient);
	if (db == NULL)
		return -1;
	ret = sbx_submit_sender_lookup(db, user->username, key);
	if (ret < 0)
		submission_sqlbox_policy_error(sclient, "look up sender");
	return ret;
}

/* -- MAIL, RCPT ----------------------------------------------------------- */

static void
submission_sqlbox_trans_reset(struct submission_sqlbox_client *sclient)
{
	submission_sqlbox_release(sclient);
	i_stream_unref(&sclient->msg);
	if (sclient->tpool != NULL)
		p_clear(sclient->tpool);
	else {
		sclient->tpool = pool_alloconly_create(
			"submission sqlbox transaction", 1024);
	}
	sclient->mail_from = NULL;
	sclient->message_id = NULL;
	sclient->refused_status = 0;
	sclient->refused_enh = sclient->refused_rule = NULL;
	sclient->data_started = FALSE;
	sclient->rcpts = 0;
	sclient->msg_offset = sclient->msg_size = 0;
	sclient->completed = FALSE;
	sclient->audited = FALSE;
}

static void
submission_sqlbox_reply_unavailable(struct submission_sqlbox_client *sclient,
				    struct smtp_server_cmd_ctx *cmd)
{
	(void)sclient;
	smtp_server_reply(cmd, 451, "4.3.0",
			  "Temporary policy failure, try again later");
}

static int
submission_sqlbox_cmd_mail(struct client *client,
			   struct smtp_server_cmd_ctx *cmd,
			   struct smtp_server_cmd_mail *data)
{
	struct submission_sqlbox_client *sclient =
		SUBMISSION_SQLBOX_CONTEXT(client);
	struct sbx_db *db;
	const char *sender;
	unsigned int count;
	int ret;

	/* a MAIL the relay refused left no transaction, so no trans_free */
	submission_sqlbox_trans_reset(sclient);
	if (sclient->settings_error != NULL) {
		e_error(client->user->event, "sqlbox: %s",
			sclient->settings_error);
		submission_sqlbox_reply_unavailable(sclient, cmd);
		return -1;
	}
	sender = smtp_address_isnull(data->path) ? "" :
		smtp_address_encode(data->path);
	sclient->mail_from = p_strdup(sclient->tpool, sender);

	/* <> stays allowed: MDNs and DSNs need it (RFC 8098) */
	if (sclient->set.sender_check && *sender != '\0') {
		ret = submission_sqlbox_owns(sclient, sender);
		if (ret < 0) {
			submission_sqlbox_reply_unavailable(sclient, cmd);
			submission_sqlbox_audit(sclient, NULL, 451, "4.3.0",
				NULL, "policy_unavailable", NULL);
			return -1;
		}
		if (ret == 0) {
			smtp_server_reply(cmd, 553, "5.7.1",
				"<%s>: Sender address rejected: "
				"not owned by user %s", sender,
				client->user->username);
			submission_sqlbox_audit(sclient, NULL, 553, "5.7.1",
				NULL, "sender_mismatch", NULL);
			return -1;
		}
	}

	if (submission_sqlbox_has_policy_db(sclient)) {
		sclient->bucket = ioloop_time / 60;
		db = submission_sqlbox_policy_db(sclient);
		ret = db == NULL ? -1 :
			sbx_submit_reserve_message(db, client->user->username,
				sclient->bucket, sclient->set.msgs_per_hour,
				&count);
		if (ret < 0 && db != NULL)
			submission_sqlbox_policy_error(sclient,
						       "reserve a message");
		if (ret < 0 && !sclient->set.fail_open) {
			submission_sqlbox_reply_unavailable(sclient, cmd);
			submission_sqlbox_audit(sclient, NULL, 451, "4.3.0",
				NULL, "policy_unavailable", NULL);
			return -1;
		}
		if (ret == 0) {
			smtp_server_reply(cmd, 450, "4.7.1",
				"Sending rate limit exceeded (%u messages "
				"per hour), try again later",
				sclient->set.msgs_per_hour);
			submission_sqlbox_audit(sclient, NULL, 450, "4.7.1",
				NULL, "rate_msgs", NULL);
			return -1;
		}
		if (ret > 0)
			sclient->reserved_msgs = 1;
	}
	return sclient->module_ctx.super.cmd_mail(client, cmd, data);
}

static void
submission_sqlbox_rcpt_refused(struct submission_sqlbox_client *sclient,
			       unsigned int status, const char *enh_code,
			       const char *rule)
{
	sclient->refused_status = status;
	sclient->refused_enh = enh_code;
	sclient->refused_rule = rule;
}

static int
submission_sqlbox_cmd_rcpt(struct client *client,
			   struct smtp_server_cmd_ctx *cmd,
			   struct submission_recipient *srcpt)
{
	struct submission_sqlbox_client *sclient =
		SUBMISSION_SQLBOX_CONTEXT(client);
	struct sbx_db *db;
	unsigned int count;
	int ret;

	if (sclient->set.max_rcpt_per_msg != 0 &&
	    sclient->rcpts >= sclient->set.max_rcpt_per_msg) {
		/* Dovecot puts "<rcpt> " in front of the text */
		smtp_server_recipient_reply(srcpt->rcpt, 452, "4.5.3",
			"Too many recipients (limit %u)",
			sclient->set.max_rcpt_per_msg);
		submission_sqlbox_rcpt_refused(sclient, 452, "4.5.3",
					       "rcpt_limit");
		return -1;
	}
	if (submission_sqlbox_has_policy_db(sclient)) {
		db = submission_sqlbox_policy_db(sclient);
		ret = db == NULL ? -1 :
			sbx_submit_reserve_recipient(db,
				client->user->username, sclient->bucket,
				sclient->set.rcpts_per_day, &count);
		if (ret < 0 && db != NULL)
			submission_sqlbox_policy_error(sclient,
						       "reserve a recipient");
		if (ret < 0 && !sclient->set.fail_open) {
			smtp_server_recipient_reply(srcpt->rcpt, 451, "4.3.0",
				"Temporary policy failure, try again later");
			submission_sqlbox_rcpt_refused(sclient, 451, "4.3.0",
						       "policy_unavailable");
			return -1;
		}
		if (ret == 0) {
			smtp_server_recipient_reply(srcpt->rcpt, 450, "4.7.1",
				"Daily recipient limit reached (%u per 24h), "
				"try again later", sclient->set.rcpts_per_day);
			submission_sqlbox_rcpt_refused(sclient, 450, "4.7.1",
						       "rate_rcpts");
			return -1;
		}
		if (ret > 0)
			sclient->reserved_rcpts++;
	}
	sclient->rcpts++;
	return sclient->module_ctx.super.cmd_rcpt(client, cmd, srcpt);
}

/* -- DATA ------------------------------------------------------------------ */

static void
submission_sqlbox_list_addresses(ARRAY_TYPE(const_string) *list,
				 const struct message_address *addr)
{
	const char *key;

	for (; addr != NULL; addr = addr->next) {
		if (addr->mailbox == NULL || addr->domain == NULL ||
		    *addr->mailbox == '\0')
			continue;
		key = t_str_lcase(t_strconcat(addr->mailbox, "@",
					      addr->domain, NULL));
		array_push_back(list, &key);
	}
}

static struct message_address *
submission_sqlbox_parse_address(const struct message_header_line *hdr)
{
	return message_address_parse(pool_datastack_create(),
				     hdr->full_value, hdr->full_value_len,
				     UINT_MAX, 0);
}

/* Reads the header block of input. Returns 0, or -1 on a read error. */
static int
submission_sqlbox_read_headers(struct istream *input,
			       struct submission_sqlbox_headers *hdrs_r)
{
	struct message_header_parser_ctx *parser;
	struct message_header_line *hdr;
	struct message_address *addr, *last;
	int ret;

	i_zero(hdrs_r);
	t_array_init(&hdrs_r->listed, 8);
	parser = message_parse_header_init(input, NULL,
			MESSAGE_HEADER_PARSER_FLAG_CLEAN_ONELINE);
	while ((ret = message_parse_header_next(parser, &hdr)) > 0) {
		if (hdr->eoh)
			break;
		if (hdr->continues) {
			hdr->use_full_value = TRUE;
			continue;
		}
		if (strcasecmp(hdr->name, "From") == 0) {
			/* a second From: header is no excuse to skip one */
			addr = submission_sqlbox_parse_address(hdr);
			if (!hdrs_r->has_from)
				hdrs_r->from = addr;
			else if (addr != NULL) {
				last = hdrs_r->from;
				while (last != NULL && last->next != NULL)
					last = last->next;
				if (last == NULL)
					hdrs_r->from = addr;
				else {
					last->next = addr;
					addr->prev = last;
				}
			}
			hdrs_r->has_from = TRUE;
		} else if (strcasecmp(hdr->name, "Sender") == 0) {
			if (hdrs_r->sender == NULL)
				hdrs_r->sender =
					submission_sqlbox_parse_address(hdr);
		} else if (strcasecmp(hdr->name, "Resent-From") == 0) {
			/* the newest Resent- block is the first one */
			if (!hdrs_r->has_resent)
				hdrs_r->resent_from =
					submission_sqlbox_parse_address(hdr);
			hdrs_r->has_resent = TRUE;
		} else if (strcasecmp(hdr->name, "Resent-Sender") == 0) {
			if (hdrs_r->resent_sender == NULL)
				hdrs_r->resent_sender =
					submission_sqlbox_parse_address(hdr);
		} else if (strcasecmp(hdr->name, "Message-ID") == 0) {
			if (hdrs_r->message_id == NULL) {
				hdrs_r->message_id = t_str_trim(
					t_strndup(hdr->full_value,
						  hdr->full_value_len), " \t");
			}
		} else if (strcasecmp(hdr->name, "To") == 0 ||
			   strcasecmp(hdr->name, "Cc") == 0 ||
			   strcasecmp(hdr->name, "Bcc") == 0) {
			submission_sqlbox_list_addresses(&hdrs_r->listed,
				submission_sqlbox_parse_address(hdr));
		}
	}
	message_parse_header_deinit(&parser);
	return ret < 0 && input->stream_errno != 0 ? -1 : 0;
}

/* The first mailbox of addrs that the user does not own, "" if all are
   owned, NULL if the operator database could not tell. *valid_r is FALSE
   when addrs has no mailbox or one that does not parse. */
static const char *
submission_sqlbox_unowned(struct submission_sqlbox_client *sclient,
			  const struct message_address *addrs, bool *valid_r)
{
	const struct message_address *addr;
	const char *address;
	unsigned int count = 0;
	int ret;

	for (addr = addrs; addr != NULL; addr = addr->next) {
		if (addr->domain == NULL)
			continue;	/* a group's start or end */
		if (addr->invalid_syntax || addr->mailbox == NULL ||
		    *addr->mailbox == '\0' || *addr->domain == '\0') {
			*valid_r = FALSE;
			return "";
		}
		count++;
	}
	*valid_r = count > 0;
	for (addr = addrs; addr != NULL; addr = addr->next) {
		if (addr->domain == NULL)
			continue;
		address = t_strconcat(addr->mailbox, "@", addr->domain, NULL);
		ret = submission_sqlbox_owns(sclient, address);
		if (ret < 0)
			return NULL;
		if (ret == 0)
			return address;
	}
	return "";
}

/* Checks From:/Sender: (or the newest Resent-From:/Resent-Sender:).
   Returns 0, or -1 after replying. */
static int
submission_sqlbox_check_from(struct submission_sqlbox_client *sclient,
			     struct smtp_server_cmd_ctx *cmd,
			     const struct submission_sqlbox_headers *hdrs)
{
	const struct message_address *from, *sender;
	const char *bad;
	bool valid, sender_valid = TRUE;

	if (hdrs->has_resent) {
		from = hdrs->resent_from;
		sender = hdrs->resent_sender;
	} else {
		from = hdrs->from;
		sender = hdrs->sender;
	}
	if (sclient->set.from_check == SUBMISSION_SQLBOX_FROM_CHECK_OFF)
		return 0;
	bad = submission_sqlbox_unowned(sclient, from, &valid);
	if (bad != NULL && *bad == '\0' && sender != NULL)
		bad = submission_sqlbox_unowned(sclient, sender, &sender_valid);
	if (!valid || !sender_valid) {
		smtp_server_reply(cmd, 554, "5.6.0",
				  "Message has no valid From: header");
		submission_sqlbox_audit(sclient, NULL, 554, "5.6.0", NULL,
					"bad_from", NULL);
		return -1;
	}
	if (bad == NULL) {
		smtp_server_reply(cmd, 451, "4.3.0",
				  "Temporary policy failure, try again later");
		submission_sqlbox_audit(sclient, NULL, 451, "4.3.0", NULL,
					"policy_unavailable", NULL);
		return -1;
	}
	if (*bad != '\0') {
		smtp_server_reply(cmd, 550, "5.7.1",
				  "From: header address <%s> not owned by "
				  "user %s", bad, sclient->client->user->username);
		submission_sqlbox_audit(sclient, NULL, 550, "5.7.1", NULL,
					"from_mismatch", NULL);
		return -1;
	}
	return 0;
}

/* The envelope recipients that To, Cc and Bcc do not list. */
static const char *
submission_sqlbox_bcc(struct smtp_server_transaction *trans,
		      const ARRAY_TYPE(const_string) *listed)
{
	struct smtp_server_recipient *const *rcptp;
	const char *key;
	string_t *str = t_str_new(128);

	array_foreach(&trans->rcpt_to, rcptp) {
		key = t_str_lcase(smtp_address_encode((*rcptp)->path));
		if (array_lsearch(listed, &key, i_strcmp_p) != NULL)
			continue;
		if (str_len(str) > 0)
			str_append(str, ", ");
		str_append(str, smtp_address_encode((*rcptp)->path));
	}
	return str_c(str);
}

static void
submission_sqlbox_data_replied(struct smtp_server_cmd_ctx *cmd,
			       struct submission_sqlbox_client *sclient)
{
	struct client *client = sclient->client;
	struct smtp_server_transaction *trans =
		smtp_server_connection_get_transaction(cmd->conn);
	struct smtp_server_reply *reply;
	struct submission_sqlbox_headers hdrs;
	struct istream *input;
	const char *enh_code = NULL, *sent = NULL, *error, *bcc = NULL;
	unsigned int status = 0, accepted;
	struct sbx_db *db;

	reply = smtp_server_command_get_reply(cmd->cmd, 0);
	if (reply != NULL)
		status = smtp_server_reply_get_status(reply, &enh_code);
	if (trans == NULL || !smtp_server_command_replied_success(cmd->cmd)) {
		/* the relay refused it: trans_free gives the reservations
		   back */
		submission_sqlbox_audit(sclient, trans, status, enh_code,
					NULL, "relay", NULL);
		return;
	}

	/* the relay has it: the reservations stand, less the recipients it
	   refused */
	accepted = array_count(&trans->rcpt_to);
	sclient->reserved_msgs = 0;
	sclient->reserved_rcpts = sclient->reserved_rcpts > accepted ?
		sclient->reserved_rcpts - accepted : 0;
	submission_sqlbox_release(sclient);
	sclient->completed = TRUE;
	if (submission_sqlbox_has_policy_db(sclient) &&
	    (db = submission_sqlbox_policy_db(sclient)) != NULL &&
	    sbx_submit_release(db, client->user->username, sclient->bucket,
			       0, 0, sclient->msg_size) < 0)
		submission_sqlbox_policy_error(sclient, "count bytes");

	if (!sclient->set.save_sent)
		sent = "off";
	else if (strcmp(cmd->name, "BURL") == 0) {
		/* the message came from the user's own mailbox */
		sent = "off";
	} else {
		input = i_stream_create_range(sclient->msg, sclient->msg_offset,
					      sclient->msg_size);
		if (sclient->set.sent_add_bcc) {
			if (submission_sqlbox_read_headers(input, &hdrs) == 0)
				bcc = submission_sqlbox_bcc(trans,
							    &hdrs.listed);
			i_stream_seek(input, 0);
		}
		if (submission_sqlbox_sent_save(client->user,
				sclient->set.sent_mailbox, input, bcc,
				&error) < 0) {
			e_error(client->user->event,
				"sqlbox: Sent copy of transaction %s failed "
				"(the message was relayed): %s", trans->id,
				error);
			sent = "failed";
		} else {
			sent = "saved";
		}
		i_stream_unref(&input);
	}
	submission_sqlbox_audit(sclient, trans, status, enh_code, NULL, "ok",
				sent);
}

static int
submission_sqlbox_cmd_data(struct client *client,
			   struct smtp_server_cmd_ctx *cmd,
			   struct smtp_server_transaction *trans,
			   struct istream *data_input, uoff_t data_size)
{
	struct submission_sqlbox_client *sclient =
		SUBMISSION_SQLBOX_CONTEXT(client);
	struct submission_sqlbox_headers hdrs;
	struct istream *input;
	int ret = 0;

	/* data_input is Dovecot's Received: trace header, then the
	   client's bytes */
	sclient->data_started = TRUE;
	i_stream_unref(&sclient->msg);
	sclient->msg_size = client->state.data_size;
	sclient->msg_offset = data_size - sclient->msg_size;
	input = i_stream_create_range(data_input, sclient->msg_offset,
				      sclient->msg_size);
	T_BEGIN {
		if (submission_sqlbox_read_headers(input, &hdrs) < 0) {
			e_error(client->user->event,
				"sqlbox: read(%s) failed: %s",
				i_stream_get_name(input),
				i_stream_get_error(input));
			smtp_server_reply(cmd, 451, "4.3.0",
				"Temporary failure reading message");
			ret = -1;
		} else {
			sclient->message_id = hdrs.message_id == NULL ? NULL :
				p_strdup(sclient->tpool, hdrs.message_id);
			if (trans->event != NULL) {
				event_add_str(trans->event, "user",
					      client->user->username);
				if (hdrs.message_id != NULL)
					event_add_str(trans->event,
						"message_id", hdrs.message_id);
			}
			ret = submission_sqlbox_check_from(sclient, cmd,
							   &hdrs);
		}
	} T_END;
	i_stream_unref(&input);
	if (ret < 0)
		return -1;

	sclient->msg = data_input;
	i_stream_ref(data_input);
	smtp_server_command_add_hook(cmd->cmd, SMTP_SERVER_COMMAND_HOOK_REPLIED,
				     submission_sqlbox_data_replied, sclient);
	i_stream_seek(data_input, 0);
	return sclient->module_ctx.super.cmd_data(client, cmd, trans,
						  data_input, data_size);
}

/* -- life cycle ------------------------------------------------------------ */

/* One audit row per transaction: one that ends without DATA (RSET, QUIT,
   a disconnect) says why, when a limit refused a recipient. Its row counts
   the recipients accepted and lists none: the transaction's recipients may
   be gone by now. */
static void
submission_sqlbox_audit_unsent(struct submission_sqlbox_client *sclient)
{
	if (sclient->mail_from == NULL || sclient->audited ||
	    sclient->data_started)
		return;
	T_BEGIN {
		submission_sqlbox_audit(sclient, NULL, sclient->refused_status,
			sclient->refused_enh, NULL,
			sclient->refused_rule != NULL ?
			sclient->refused_rule : "abandoned", NULL);
	} T_END;
}

static void
submission_sqlbox_trans_free(struct client *client,
			     struct smtp_server_transaction *trans)
{
	struct submission_sqlbox_client *sclient =
		SUBMISSION_SQLBOX_CONTEXT(client);

	submission_sqlbox_audit_unsent(sclient);
	submission_sqlbox_release(sclient);
	i_stream_unref(&sclient->msg);
	sclient->rcpts = 0;
	sclient->module_ctx.super.trans_free(client, trans);
}

static void submission_sqlbox_destroy(struct client *client)
{
	struct submission_sqlbox_client *sclient =
		SUBMISSION_SQLBOX_CONTEXT(client);

	/* the transaction a disconnect ends; trans_free may come after
	   this, with nothing left to audit */
	submission_sqlbox_audit_unsent(sclient);
	sclient->mail_from = NULL;
	submission_sqlbox_release(sclient);
	i_stream_unref(&sclient->msg);
	sbx_db_close(&sclient->policy_db);
	pool_unref(&sclient->tpool);
	sclient->module_ctx.super.destroy(client);
}

static void submission_sqlbox_client_created(struct client **_client)
{
	struct client *client = *_client;
	struct submission_sqlbox_client *sclient;
	struct submission_client_vfuncs *v = &client->v;
	const char *error;

	if (mail_user_is_plugin_loaded(client->user,
				       submission_sqlbox_module)) {
		sclient = p_new(client->pool, struct submission_sqlbox_client,
				1);
		sclient->client = client;
		sclient->module_ctx.super = *v;
		if (submission_sqlbox_settings_read(client->user,
						    &sclient->set,
						    &error) < 0) {
			sclient->settings_error =
				p_strdup(client->pool, error);
		}
		sclient->tpool = pool_alloconly_create(
			"submission sqlbox transaction", 1024);
		v->cmd_mail = submission_sqlbox_cmd_mail;
		v->cmd_rcpt = submission_sqlbox_cmd_rcpt;
		v->cmd_data = submission_sqlbox_cmd_data;
		v->trans_free = submission_sqlbox_trans_free;
		v->destroy = submission_sqlbox_destroy;
		MODULE_CONTEXT_SET(client, submission_sqlbox_client_module,
				   sclient);
	}
	if (next_hook_client_created != NULL)
		next_hook_client_created(_client);
}

void submission_sqlbox_plugin_init(struct module *module)
{
	submission_sqlbox_module = module;
	next_hook_client_created =
		submission_client_created_hook_set(
			submission_sqlbox_client_created);
}

void submission_sqlbox_plugin_deinit(void)
{
	(void)submission_client_created_hook_set(next_hook_client_created);
	sbx_db_close_parked();
}
