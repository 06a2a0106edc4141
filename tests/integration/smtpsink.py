# SPDX-License-Identifier: MIT
"""A recording SMTP relay for the submission tests (aiosmtpd, Debian's
python3-aiosmtpd): it keeps every message it accepts, with its envelope,
and delivers nothing.

It advertises ENHANCEDSTATUSCODES (RFC 2034), as a real MTA does: without
it Dovecot puts "x.0.0" in front of the relay's replies. It refuses RCPT
of a local part starting with "relayreject" (550 5.1.1) and a message
containing SINK-REJECT-DATA (554 5.7.1), so the tests can see a relay's
refusal reach the client.
"""

import threading

from aiosmtpd.controller import Controller


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        session.host_name = hostname
        return responses[:-1] + ["250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        if address.lower().startswith("relayreject"):
            return "550 5.1.1 <%s>: Recipient address rejected" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content
        if b"SINK-REJECT-DATA" in data:
            return "554 5.7.1 Message refused by the sink"
        with self.sink.lock:
            self.sink.messages.append({
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "data": data,
            })
        return "250 2.0.0 OK queued"


class Sink:
    """sink = Sink(port); sink.start(); ... sink.messages; sink.stop()"""

    def __init__(self, port):
        self.port = port
        self.messages = []
        self.lock = threading.Lock()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1",
                                     port=port, decode_data=False,
                                     enable_SMTPUTF8=True,
                                     data_size_limit=100 * 1024 * 1024)

    def start(self):
        self.controller.start()

    def stop(self):
        self.controller.stop()

    def count(self):
        with self.lock:
            return len(self.messages)
