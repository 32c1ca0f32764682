#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""smtp_load.py - SMTP traffic for tests/integration/ratelimit.sh.

Talks to 127.0.0.1 only and records what happened to every message, so that
the test can count outcomes itself instead of trusting the milter.

  smtp_load.py burst --port P [--port P ...] --threads N --count N
               --from FMT [--to ADDR] [--per-conn K] [--body-bytes N] [--sync]
      N attempts shared by the threads; thread t talks to the t-th port
      (round robin).  An attempt is MAIL, RCPT and, if the RCPT got a 2xx,
      DATA with the message.  With --per-conn K a connection carries up to K
      attempts (RSET after a refused RCPT); otherwise one each, QUIT after a
      refused RCPT.  FMT may hold {n}, the attempt number (distinct senders).
      --sync: waves of one attempt per thread; in each wave the threads send
      their RCPTs together (after every MAIL of the wave has its reply), the
      most contention a limit can see.

  smtp_load.py pace --port P --every-ms A-B --duration S --from ADDR [--to ADDR]
      One attempt (a session of its own) started every A..B ms (uniformly
      random), one at a time, for S seconds.

  Both print one tab-separated line per attempt:
      n  port  rcpt_sent_ms  rcpt_reply_ms  rcpt_reply  dot_reply
  times in Unix milliseconds (the same clock Redis' TIME reads), replies as
  the server sent them (lines of a multi-line reply joined with " / "), "-"
  for none, "ERR text" when the connection failed; then "# elapsed_ms N".

  smtp_load.py session --port P [--redis SOCKET] STEP...
      One session; prints a transcript in the harness' format (" -> " client
      lines, "<-  " / "<** " replies).  A STEP is an SMTP command line sent
      as is ("MAIL FROM:<a@b> SIZE=5000", "RCPT TO:<c@d>", "RSET", "QUIT"),
      or DATA:N (DATA, then a message of N body octets and the dot), DROP
      (close the connection without QUIT), PROBE:KEY (prints "=== probe KEY
      SUM": the sum of the Redis hash KEY, read from SOCKET), SLEEP:MS.
"""
import random
import socket
import sys
import threading
import time

TIMEOUT = 30


class Closed(Exception):
    pass


def now_ms():
    return time.time() * 1000.0


class Smtp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.f = self.sock.makefile("rb")

    def reply(self):
        lines = []
        while True:
            ln = self.f.readline()
            if not ln:
                raise Closed()
            ln = ln.decode("latin-1").rstrip("\r\n")
            lines.append(ln)
            if len(ln) < 4 or ln[3] != "-":
                return lines

    def send(self, data):
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def code(lines):
    return int(lines[0][:3]) if lines and lines[0][:3].isdigit() else 0


def joined(lines):
    return " / ".join(lines)


def message(sender, rcpt, nbytes, tag):
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: rate limit test %s\r\n"
            "Message-Id: <%s@client.test.example>\r\n\r\n" % (sender, rcpt, tag, tag))
    body = []
    left = max(nbytes, 2)
    while left > 0:
        k = max(min(78, left - 2), 0)
        body.append("x" * k + "\r\n")
        left -= k + 2
    return (head + "".join(body)).encode()


def opts_of(args, defaults, multi=()):
    o = dict(defaults)
    for m in multi:
        o[m] = []
    rest = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in o:
            if a in multi:
                o[a].append(args[i + 1])
            else:
                o[a] = args[i + 1]
            i += 2
        else:
            rest.append(a)
            i += 1
    return o, rest


# ------------------------------------------------------------ attempts

def attempt(s, n, sender, rcpt, nbytes, last, barrier=None):
    """One transaction on an open session; returns the result fields and
    whether the session can carry another transaction.  With a barrier the
    RCPT waits until every thread is ready to send its own."""
    r = s.cmd("MAIL FROM:<%s>" % sender)
    if barrier is not None:
        try:
            barrier.wait(TIMEOUT)
        except threading.BrokenBarrierError:
            pass
    if code(r) != 250:
        return (None, None, "MAIL " + joined(r), "-"), False
    t0 = now_ms()
    r = s.cmd("RCPT TO:<%s>" % rcpt)
    t1 = now_ms()
    rcpt_reply = joined(r)
    if code(r) // 100 != 2:
        if last:
            s.cmd("QUIT")
            return (t0, t1, rcpt_reply, "-"), False
        s.cmd("RSET")
        return (t0, t1, rcpt_reply, "-"), True
    r = s.cmd("DATA")
    if code(r) != 354:
        return (t0, t1, rcpt_reply, "DATA " + joined(r)), False
    s.send(message(sender, rcpt, nbytes, "a%d" % n) + b".\r\n")
    r = s.reply()
    if last:
        try:
            s.cmd("QUIT")
        except (Closed, OSError):
            pass
    return (t0, t1, rcpt_reply, joined(r)), code(r) != 421


def fmt(n, port, res):
    t0, t1, rr, dr = res
    return "%d\t%d\t%s\t%s\t%s\t%s" % (
        n, port, "%.3f" % t0 if t0 else "-", "%.3f" % t1 if t1 else "-", rr, dr)


def run_connection(port, numbers, sender_fmt, rcpt, nbytes, out, lock, barrier=None):
    """Run the attempts numbered in `numbers` on one connection (a new one
    when the server ends the session early)."""
    i = 0
    while i < len(numbers):
        try:
            s = Smtp(port)
        except OSError as e:
            if barrier is not None:
                barrier.abort()     # the others must not wait for this one
            with lock:
                out.append(fmt(numbers[i], port, (None, None, "ERR connect: %s" % e, "-")))
            i += 1
            continue
        try:
            if code(s.reply()) != 220 or code(s.cmd("EHLO client.test.example")) != 250:
                raise Closed()
            while i < len(numbers):
                n = numbers[i]
                res, more = attempt(s, n, sender_fmt.format(n=n), rcpt, nbytes,
                                    i == len(numbers) - 1, barrier)
                with lock:
                    out.append(fmt(n, port, res))
                i += 1
                if not more:
                    break
        except (Closed, OSError) as e:
            if barrier is not None:
                barrier.abort()
            with lock:
                out.append(fmt(numbers[i], port, (None, None, "ERR %s" % (
                    "server closed the connection" if isinstance(e, Closed) else e), "-")))
            i += 1
        finally:
            s.close()


def burst(args):
    o, rest = opts_of(args, {"--threads": "16", "--count": "1", "--from": "",
                             "--to": "rcpt@example.net", "--per-conn": "1",
                             "--body-bytes": "200"}, multi=("--port",))
    ports = [int(p) for p in o["--port"]]
    threads, count, per_conn = int(o["--threads"]), int(o["--count"]), int(o["--per-conn"])
    nbytes = int(o["--body-bytes"])
    lock = threading.Lock()
    out = []
    next_n = [1]
    # --sync: waves of one attempt per thread whose RCPTs leave together.
    sync = "--sync" in rest
    if sync and (count % threads or per_conn != 1):
        sys.stderr.write("--sync needs --count a multiple of --threads, --per-conn 1\n")
        sys.exit(2)
    barrier = threading.Barrier(threads) if sync else None

    def worker(t):
        port = ports[t % len(ports)]
        if sync:
            for w in range(count // threads):
                run_connection(port, [w * threads + t + 1], o["--from"], o["--to"],
                               nbytes, out, lock, barrier)
            return
        while True:
            with lock:
                first = next_n[0]
                if first > count:
                    return
                last = min(first + per_conn - 1, count)
                next_n[0] = last + 1
            run_connection(port, list(range(first, last + 1)), o["--from"], o["--to"],
                           nbytes, out, lock)

    start = now_ms()
    ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    out.sort(key=lambda ln: int(ln.split("\t", 1)[0]))
    sys.stdout.write("".join(ln + "\n" for ln in out))
    sys.stdout.write("# elapsed_ms %d\n" % (now_ms() - start))


def pace(args):
    o, _ = opts_of(args, {"--port": "", "--every-ms": "100-150", "--duration": "12",
                          "--from": "", "--to": "rcpt@example.net", "--body-bytes": "200"})
    port = int(o["--port"])
    lo, hi = (float(x) for x in o["--every-ms"].split("-"))
    start = now_ms()
    end = start + float(o["--duration"]) * 1000.0
    out, lock = [], threading.Lock()
    n, due = 0, start
    while due < end:
        wait = (due - now_ms()) / 1000.0
        if wait > 0:
            time.sleep(wait)
        n += 1
        run_connection(port, [n], o["--from"], o["--to"], int(o["--body-bytes"]), out, lock)
        due += random.uniform(lo, hi)
    sys.stdout.write("".join(ln + "\n" for ln in out))
    sys.stdout.write("# elapsed_ms %d\n" % (now_ms() - start))


# ------------------------------------------------------------ one session

def redis_hash_sum(path, key):
    """HGETALL over RESP on a unix socket; the sum of the values."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    k = key.encode()
    s.sendall(b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%s\r\n" % (len(k), k))
    f = s.makefile("rb")
    head = f.readline()
    if not head.startswith(b"*"):
        raise RuntimeError("HGETALL %s: %r" % (key, head))
    vals = []
    for _ in range(int(head[1:])):
        n = int(f.readline()[1:])
        vals.append(f.read(n + 2)[:-2])
    s.close()
    return sum(int(v) for v in vals[1::2])


def session(args):
    o, steps = opts_of(args, {"--port": "", "--redis": ""})
    out = sys.stdout

    def show(lines):
        mark = "<** " if lines[0][:1] in ("4", "5") else "<-  "
        for ln in lines:
            out.write(mark + ln + "\n")
        return lines

    def cmd(line):
        out.write(" -> " + line + "\n")
        return show(s.cmd(line))

    try:
        s = Smtp(int(o["--port"]))
    except OSError as e:
        out.write("*** Error connecting: %s\n" % e)
        return
    sender, rcpt = "", ""
    try:
        out.write("=== Connected to 127.0.0.1.\n")
        show(s.reply())
        cmd("EHLO client.test.example")
        for st in steps:
            if st.startswith("PROBE:"):
                out.write("=== probe %s %d\n" % (st[6:], redis_hash_sum(o["--redis"], st[6:])))
            elif st.startswith("SLEEP:"):
                time.sleep(int(st[6:]) / 1000.0)
            elif st == "DROP":
                s.close()
                out.write("=== Connection dropped by the client.\n")
                return
            elif st.startswith("DATA:"):
                if code(cmd("DATA")) == 354:
                    data = message(sender, rcpt, int(st[5:]), "s")
                    out.write(" -> %d bytes sent\n" % len(data))
                    s.send(data + b".\r\n")
                    show(s.reply())
            else:
                if st.upper().startswith("MAIL FROM:"):
                    sender = st[10:].split(">")[0].lstrip("<")
                elif st.upper().startswith("RCPT TO:") and not rcpt:
                    rcpt = st[8:].split(">")[0].lstrip("<")
                cmd(st)
                if st.upper() == "QUIT":
                    out.write("=== Connection closed with remote host.\n")
                    return
    except Closed:
        out.write("*** Remote host closed connection unexpectedly.\n")
    except OSError as e:
        out.write("*** %s\n" % e)
    finally:
        s.close()


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("burst", "pace", "session"):
        sys.stderr.write(__doc__)
        return 2
    {"burst": burst, "pace": pace, "session": session}[sys.argv[1]](sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
