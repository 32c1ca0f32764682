#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
#
# mkseeds.py - write the generated seeds of tests/fuzz/corpus: the milter
# packet streams (fuzz_milter), the Redis replies (fuzz_limiter), reply
# templates (fuzz_reply) and list files (fuzz_matcher), whose inputs are
# binary framings.  The configurations (fuzz_config) are plain files kept
# as they are.  Run from anywhere: python3 tests/fuzz/mkseeds.py
#
# The streams are what Postfix 3.7 sends (milter_protocol = 6, its default
# macros) in the sessions below, as tests/mproto.c frames them: a 4-octet
# big-endian length (command + data), the command octet, the data.  The
# first octet of a seed picks fuzz_milter's configuration.
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def pkt(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd.encode() + data


def z(*strings):
    return b"".join(s.encode("latin-1") + b"\0" for s in strings)


def macros(stage, **kv):
    return pkt("D", stage.encode() + z(*[x for p in kv.items() for x in p]))


def optneg(actions=0x1FF, protocol=0x1FFFFF):
    return pkt("O", struct.pack(">III", 6, actions, protocol))


def connect(host="client.example.net", ip="192.0.2.10", family="4", port=40000):
    if family == "U":
        return pkt("C", z(host) + b"U")
    return pkt("C", z(host) + family.encode() + struct.pack(">H", port) + z(ip))


def conn_macros():
    return pkt("D", b"C" + z("j", "mx.example.com", "{daemon_name}", "mx.example.com",
                             "{daemon_addr}", "192.0.2.1", "v", "Postfix 3.7.11",
                             "_", "client.example.net [192.0.2.10]"))


def message(sender="<alice@example.org>", rcpts=("<bob@example.com>",),
            args=("SIZE=512", "BODY=8BITMIME"), auth=None, body=b"Hello.\r\n" * 8,
            qid="4ABCD1234"):
    m = {"i": qid, "{mail_addr}": sender.strip("<>"), "{mail_host}": "example.org",
         "{mail_mailer}": "smtp"}
    if auth:
        m.update({"{auth_type}": "PLAIN", "{auth_authen}": auth})
    out = pkt("D", b"M" + z(*[x for p in m.items() for x in p]))
    out += pkt("M", z(sender, *args))
    for r in rcpts:
        out += pkt("D", b"R" + z("i", qid, "{rcpt_addr}", r.strip("<>"),
                                 "{rcpt_host}", "example.com", "{rcpt_mailer}", "smtp"))
        out += pkt("R", z(r))
    out += pkt("L", z("From", " " + sender))
    out += pkt("L", z("Subject", " test"))
    out += pkt("L", z("Message-ID", " <1@example.org>"))
    out += pkt("N")
    out += pkt("B", body)
    out += pkt("D", b"E" + z("i", qid))
    out += pkt("E")
    return out


def session(cfg=0, helo="client.example.net", **kw):
    return (bytes([cfg]) + optneg() + conn_macros() + connect(**kw) +
            pkt("D", b"H" + z("{tls_version}", "TLSv1.3")) + pkt("H", z(helo)))


milter = {
    "plain-c0": session(0) + message() + pkt("Q"),
    "plain-c1": session(1) + message() + pkt("Q"),
    "two-messages-rset": session(0) + message() + pkt("D", b"M" + z("i", "X")) +
        pkt("M", z("<carol@example.org>")) + pkt("R", z("<dave@example.com>")) +
        pkt("A") + message(rcpts=("<eve@example.com>", "<frank@example.com>")) + pkt("Q"),
    "blocked-sender": session(0) + message(sender="<spam@example.com>") + pkt("Q"),
    "null-sender": session(0) + message(sender="<>", args=()) + pkt("Q"),
    "quoted-sender": session(0) + message(sender='<"john doe"@Example.COM.>') + pkt("Q"),
    "many-rcpts": session(0) + message(rcpts=tuple("<r%d@example.com>" % i
                                                   for i in range(6))) + pkt("Q"),
    "size-declared": session(0) + message(args=("SIZE=99999999",)) + pkt("Q"),
    "size-real": session(1) + message(body=b"x" * 2000) + pkt("Q"),
    "ipv6-blocked": session(0, ip="2001:db8:bad::25", family="6") + message() + pkt("Q"),
    "exempt-client": session(0, ip="192.0.2.1") + message() + pkt("Q"),
    "relay-accept": session(1, ip="192.0.2.99") + message() + pkt("Q"),
    "unix-client": session(0, ip="/var/run/local.sock", family="L") + message() + pkt("Q"),
    "unknown-client": session(1, family="U") + message() + pkt("Q"),
    "helo-tempfail": session(0, helo="host.dyn.example") + message() + pkt("Q"),
    "helo-quarantine": session(1, helo="a.hold.example") + message() + pkt("Q"),
    "auth-trusted": session(0) + message(auth="trusted") + pkt("Q"),
    "auth-user": session(1) + message(auth="alice@example.com",
                                     rcpts=("<a+tag@example.com>", "<b@example.com>")) + pkt("Q"),
    "discard-quarantine": session(0) + message(rcpts=("<x@discard.example>",
                                                      "<hold@example.com>")) + pkt("Q"),
    "listed-rcpt": session(1) + message(rcpts=("<listed@example.org>",
                                               "<Admin7@x.example>")) + pkt("Q"),
    "quit-nc": session(0) + message() + pkt("K") + conn_macros() +
        connect(ip="198.51.100.7") + pkt("H", z("second.example")) + message() + pkt("Q"),
    "no-negotiation": bytes([0]) + pkt("M", z("<a@example.org>")) +
        pkt("R", z("<b@example.com>")) + pkt("E"),
    "eom-with-body": session(0) + message(body=b"x\r\n")[:-5] + pkt("E", b"last chunk\r\n") +
        pkt("Q"),
    "percent-crlf": session(0) + message(sender="<100%\r\nx@worse.example>") + pkt("Q"),
    "old-protocol": bytes([1]) + pkt("O", struct.pack(">III", 2, 0, 0)) + connect() +
        message() + pkt("Q"),
    "disconnect-mid": session(0) + pkt("M", z("<a@example.org>")) + pkt("R", z("<b@c.d>")),
}

# The script's reply for nc checks: refused, stop, then per check status
# (-1 failed, 1 over, 0), count, retry_ms, field.
def resp(v):
    if isinstance(v, int):
        return b":%d\r\n" % v
    if isinstance(v, bytes):
        return b"$%d\r\n%s\r\n" % (len(v), v)
    if v is None:
        return b"$-1\r\n"
    if isinstance(v, str):
        return v.encode()
    return b"*%d\r\n" % len(v) + b"".join(resp(x) for x in v)


limiter = {
    "one-ok": bytes([1]) + resp([0, 1, 0, 3, 0, 1700000000000]),
    "one-over": bytes([1]) + resp([1, 0, 1, 10, 42000, -1]),
    "two-lookup": bytes([2]) + resp([0, 2, 0, 5, 0, 1700000000000, 1, 2, 0, -1]),
    "failed-lookup": bytes([1]) + resp([0, 1, -1, 0, 0, -1]),
    "none": bytes([0]) + resp([0, 0]),
    "script-error": bytes([1]) + b"-ERR user_script:1: bad argument\r\n",
    "wrong-count": bytes([3]) + resp([0, 1, 0, 0, 0, 0]),
    "wrong-types": bytes([1]) + resp([0, 1, b"0", None, [1, 2], 0]),
    "stop-past-nc": bytes([1]) + resp([0, 7, 0, 0, 0, 0]),
    "pipeline": bytes([1]) + resp([0, 1, 0, 3, 0, 5]) + b"+OK\r\n" +
        resp([1, 0, 1, 9, 1, 1]) + b":12\r\n",
    "nested": bytes([2]) + resp([[0, [1, [2, [3]]]], "+status\r\n"]),
}


def write(target, seeds):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


write("fuzz_milter", milter)
write("fuzz_limiter", limiter)


# fuzz_reply: one octet (bit 0: tempfail; lines = 1 + (octet >> 1) % 34),
# then NUL-separated template lines and the nine variables of REPLY_VARS.
def reply(tempfail, lines, values=()):
    return bytes([(len(lines) - 1) << 1 | tempfail]) + b"\0".join(
        s.encode("latin-1") for s in list(lines) + list(values))


VALUES = ("per-user", "alice@example.org", "500", "1h", "59m 59s",
          "alice@example.org", "bob@example.com", "192.0.2.10", "1048576")
replies = {
    "size": reply(0, ["552 5.3.4 Message too big for this system (limit ${limit})"], VALUES),
    "rcpts": reply(1, ["452 4.5.3 Too many recipients"]),
    "ratelimit": reply(1, ["451 4.7.1 ${key} sent too much mail; try again in ${retry_after}"],
                       VALUES),
    "network": reply(1, ["421 4.7.0 Too many messages from your network"]),
    "sender": reply(0, ["550 5.7.1 Sender ${sender} is not accepted here"],
                    ("p", "", "", "", "", "100%\r\nx\x01\xff@example.com")),
    "multi": reply(0, ["550-5.7.1 not this one", "second ${rcpt}", "third $$5 ${policy}"],
                   VALUES),
    "no-xcode": reply(0, ["554 Transaction failed for ${client_ip}"], VALUES),
    "nonstandard": reply(1, ["471 4.7.1 spam filter"]),
    "all-vars": reply(0, ["550 5.7.1 ${policy} ${key} ${limit} ${window} ${retry_after} "
                          "${sender} ${rcpt} ${client_ip} ${size}"], tuple("v" * 300 for _ in VALUES)),
    "long-lines": reply(1, ["451 4.3.0 " + "x" * 500] + ["${sender}" * 3] * 31, ("%" * 600,) * 9),
    "bad-class": reply(0, ["550 4.7.1 wrong class"]),
    "bad-var": reply(0, ["550 5.7.1 ${nope} $"]),
    "dash": reply(0, ["550-5.7.1 dash"]),
    "success": reply(0, ["250 2.0.0 ok"]),
}
write("fuzz_reply", replies)

# fuzz_matcher: one octet, the kind (0 address, 1 domain, 2 client, 3 name),
# then a list file, then NUL-separated values to look up.
def matcher(kind, text, values=()):
    return bytes([kind]) + text.encode("latin-1") + b"".join(
        b"\0" + v.encode("latin-1") for v in values)


matchers = {
    "address": matcher(0, "\xef\xbb\xbf# blocked senders\n\nspam@example.com\n   \t\n"
                       "  @bad.example  \n\t.worse.example\t\r\n<>\n\"john doe\"@example.com\n"
                       "/^x-.*@/i\nlast@example.org",
                       ("SPAM@Example.com.", "a@b.worse.example", "", "<>", "x-1@y",
                        "\"john\\ doe\"@example.com", "notworse.example")),
    "domain": matcher(1, "example.com\n.sub.example.net\n@at.example\n/\\.test$/\n",
                      ("a@EXAMPLE.com", "x.sub.example.net", "sub.example.net", "b.test")),
    "client": matcher(2, "192.0.2.0/24\n198.51.100.7\n2001:db8::/32\n::ffff:203.0.113.0/120\n"
                      "/^10\\./\n",
                      ("192.0.2.200", "IPv6:2001:db8::1", "::ffff:192.0.2.1", "203.0.113.9",
                       "10.1.2.3", "garbage")),
    "name": matcher(3, "mail.example.com\n.dyn.example\nalice@example.org\n/^unknown$/\n",
                    ("MAIL.example.com.", "x.dyn.example", "bob@dyn.example", "unknown")),
    "bad-lines": matcher(0, "a@b@c\n/(/\n@\n.\n" + "x" * 300 + "\n\x01\n192.0.2.1/24\n"),
    "bad-clients": matcher(2, "300.1.1.1\n1.2.3.4/33\n::/129\nexample.com\n192.0.2.1/24\n"),
}
write("fuzz_matcher", matchers)
