#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""fault_load.py - steady SMTP load for tests/integration/faults.sh.

Talks to 127.0.0.1 only.  Records every SMTP command's latency (from the
moment it is sent to the end of its reply) and what happened to every
message, so that the test counts outcomes and delays on the client side.

  fault_load.py run --port P --threads N --duration S [--per-conn K]
                    [--from FMT] [--senders M] [--listed ADDR] [--listed-every J]
                    [--rcpt ADDR] [--body-bytes N] [--timeout S] [--until FILE]
      N threads, each running sessions back to back for S seconds: banner,
      EHLO, then up to K transactions (MAIL, RCPT, DATA, the message, RSET
      between two), QUIT.  Attempt n (counted over all threads) comes from
      FMT with {n} replaced by n % M, or, for every J-th attempt, from ADDR
      (a sender on a block list).  A session the server ends early (421, a
      closed connection) is followed by a new one.  A command that gets no
      reply within --timeout seconds (default 15) ends its session and is
      recorded with the time it waited.  With --until FILE the run ends
      once FILE exists (S is then the longest it may last).
      Prints, one per line, tab-separated:
        C  command  sent_ms  latency_ms  reply_code     (every command; the
                                                          banner is CONNECT)
        M  n  sender  outcome  queue_id                (every attempt)
      outcome: "accepted" (250 after the data), "MAIL:<code>", "RCPT:<code>",
      "DATA:<code>", "DOT:<code>" (refused there), "ERR:<what>"; queue_id
      is "-" unless accepted.  Then "# elapsed_ms N".

  fault_load.py summary FILE
      From a run's output: "attempts A accepted B mail_refused C
      rcpt_refused D dot_refused E errors F", then "latency n N p50 X p99 Y
      max Z" (ms, over every command), the same per command as "cmd CMD n N
      p50 X p99 Y max Z", then the five slowest commands as "slow CMD
      LATENCY_MS CODE".
"""
import os
import socket
import sys
import threading
import time


class Closed(Exception):
    pass


def now_ms():
    return time.time() * 1000.0


class Session:
    def __init__(self, port, timeout, log):
        self.log = log
        self.timeout = timeout
        t0 = now_ms()
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            self.f = self.sock.makefile("rb")
            self.lines = self._reply()
        except (OSError, Closed):
            self.log(("C", "CONNECT", t0, now_ms() - t0, 0))
            raise
        self.log(("C", "CONNECT", t0, now_ms() - t0, code(self.lines)))

    def _reply(self):
        lines = []
        while True:
            ln = self.f.readline()
            if not ln:
                raise Closed()
            ln = ln.decode("latin-1").rstrip("\r\n")
            lines.append(ln)
            if len(ln) < 4 or ln[3] != "-":
                return lines

    def cmd(self, name, data):
        """Send data (a command line with CRLF, or a message and its dot)
        and read the reply; the latency is logged even on failure."""
        t0 = now_ms()
        try:
            self.sock.sendall(data)
            r = self._reply()
        except (OSError, Closed):
            self.log(("C", name, t0, now_ms() - t0, 0))
            raise
        self.log(("C", name, t0, now_ms() - t0, code(r)))
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def code(lines):
    return int(lines[0][:3]) if lines and lines[0][:3].isdigit() else 0


def message(sender, rcpt, nbytes, n):
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: fault load %d\r\n"
            "Message-Id: <fault-%d-%d@client.test.example>\r\n\r\n"
            % (sender, rcpt, n, n, int(time.time() * 1000)))
    body = []
    left = max(nbytes, 2)
    while left > 0:
        k = max(min(78, left - 2), 0)
        body.append("x" * k + "\r\n")
        left -= k + 2
    return (head + "".join(body) + ".\r\n").encode()


def opts_of(args, defaults):
    o = dict(defaults)
    i = 0
    while i < len(args):
        if args[i] not in o or i + 1 >= len(args):
            sys.stderr.write("unknown or incomplete option %s\n%s" % (args[i], __doc__))
            sys.exit(2)
        o[args[i]] = args[i + 1]
        i += 2
    return o


def run(args):
    o = opts_of(args, {"--port": "", "--threads": "50", "--duration": "10",
                       "--per-conn": "3", "--from": "u{n}@load.example",
                       "--senders": "40", "--listed": "", "--listed-every": "10",
                       "--rcpt": "r@example.net", "--body-bytes": "300",
                       "--timeout": "15", "--until": ""})
    port, threads = int(o["--port"]), int(o["--threads"])
    per_conn, nsenders = int(o["--per-conn"]), int(o["--senders"])
    every, nbytes = int(o["--listed-every"]), int(o["--body-bytes"])
    timeout = float(o["--timeout"])
    start = now_ms()
    end = start + float(o["--duration"]) * 1000.0
    lock = threading.Lock()
    out = []
    counter = [0]
    until = o["--until"]

    def going():
        return now_ms() < end and not (until and os.path.exists(until))

    def log(rec):
        with lock:
            out.append(rec)

    def next_attempt():
        with lock:
            counter[0] += 1
            n = counter[0]
        if o["--listed"] and every > 0 and n % every == 0:
            return n, o["--listed"]
        return n, o["--from"].format(n=n % nsenders)

    def transaction(s, n, sender):
        """One attempt; returns (outcome, queue id, session still usable)."""
        r = s.cmd("MAIL", ("MAIL FROM:<%s>\r\n" % sender).encode())
        if code(r) != 250:
            return "MAIL:%d" % code(r), "-", code(r) != 421
        r = s.cmd("RCPT", ("RCPT TO:<%s>\r\n" % o["--rcpt"]).encode())
        if code(r) // 100 != 2:
            return "RCPT:%d" % code(r), "-", code(r) != 421
        r = s.cmd("DATA", b"DATA\r\n")
        if code(r) != 354:
            return "DATA:%d" % code(r), "-", code(r) != 421
        r = s.cmd("DOT", message(sender, o["--rcpt"], nbytes, n))
        if code(r) != 250:
            return "DOT:%d" % code(r), "-", code(r) != 421
        qid = r[0].split("queued as ")[-1].strip() if "queued as " in r[0] else "?"
        return "accepted", qid, True

    def worker():
        while going():
            try:
                s = Session(port, timeout, log)
            except (OSError, Closed) as e:
                n, sender = next_attempt()
                log(("M", n, sender, "ERR:connect %s" % (e or "closed"), "-"))
                time.sleep(0.05)
                continue
            try:
                if code(s.lines) != 220:
                    s.cmd("QUIT", b"QUIT\r\n")
                    continue
                if code(s.cmd("EHLO", b"EHLO client.test.example\r\n")) != 250:
                    s.cmd("QUIT", b"QUIT\r\n")
                    continue
                more = True
                for i in range(per_conn):
                    if not more or not going():
                        break
                    if i > 0:
                        s.cmd("RSET", b"RSET\r\n")
                    n, sender = next_attempt()
                    try:
                        outcome, qid, more = transaction(s, n, sender)
                    except (OSError, Closed) as e:
                        log(("M", n, sender, "ERR:%s" % (
                            "server closed the connection" if isinstance(e, Closed)
                            else e), "-"))
                        raise
                    log(("M", n, sender, outcome, qid))
                if more:
                    s.cmd("QUIT", b"QUIT\r\n")
            except (OSError, Closed):
                pass
            finally:
                s.close()

    ths = [threading.Thread(target=worker) for _ in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    w = sys.stdout.write
    for rec in out:
        if rec[0] == "C":
            w("C\t%s\t%.1f\t%.1f\t%d\n" % rec[1:])
        else:
            w("M\t%d\t%s\t%s\t%s\n" % rec[1:])
    w("# elapsed_ms %d\n" % (now_ms() - start))


def percentile(v, p):
    if not v:
        return 0.0
    i = int(p / 100.0 * (len(v) - 1) + 0.5)
    return v[min(i, len(v) - 1)]


def summary(args):
    att = {"attempts": 0, "accepted": 0, "mail_refused": 0, "rcpt_refused": 0,
           "dot_refused": 0, "errors": 0}
    lat = []
    with open(args[0]) as f:
        for ln in f:
            p = ln.rstrip("\n").split("\t")
            if p[0] == "C":
                lat.append((float(p[3]), p[1], p[4]))
            elif p[0] == "M":
                att["attempts"] += 1
                oc = p[3]
                if oc == "accepted":
                    att["accepted"] += 1
                elif oc.startswith("MAIL:"):
                    att["mail_refused"] += 1
                elif oc.startswith("RCPT:"):
                    att["rcpt_refused"] += 1
                elif oc.startswith("DOT:") or oc.startswith("DATA:"):
                    att["dot_refused"] += 1
                else:
                    att["errors"] += 1
    print(" ".join("%s %d" % (k, v) for k, v in att.items()))
    lat.sort()
    v = [x[0] for x in lat]
    print("latency n %d p50 %.1f p99 %.1f max %.1f"
          % (len(v), percentile(v, 50), percentile(v, 99), v[-1] if v else 0.0))
    for name in ("CONNECT", "EHLO", "MAIL", "RCPT", "DATA", "DOT", "RSET", "QUIT"):
        w = [x[0] for x in lat if x[1] == name]
        if w:
            print("cmd %s n %d p50 %.1f p99 %.1f max %.1f"
                  % (name, len(w), percentile(w, 50), percentile(w, 99), w[-1]))
    for ms, cmd, c in reversed(lat[-5:]):
        print("slow %s %.1f %s" % (cmd, ms, c))


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "summary"):
        sys.stderr.write(__doc__)
        return 2
    {"run": run, "summary": summary}[sys.argv[1]](sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
