/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzzlib - what the libFuzzer targets in tests/fuzz share: handing the
 * input to loaders that read files, looking for words in it, and stopping
 * with a message when a target finds that the code under test broke one of
 * its promises (the fuzzer then keeps the input as a crash).
 */
#ifndef PM_FUZZLIB_H
#define PM_FUZZLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The libFuzzer entry points each target defines. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * A path whose contents are exactly data[0..size): an in-memory file
 * (memfd) opened once per process, rewritten on every call, named
 * /proc/self/fd/N.  Every open of that path reads from the start.
 * Stops the process if the file cannot be made.
 */
const char *fz_file(const void *data, size_t size);

/* Does data contain word, ignoring ASCII case? */
bool fz_contains(const void *data, size_t size, const char *word);

/* A copy of data[0..size) with a NUL after it (free it). */
char *fz_strndup(const void *data, size_t size);

/*
 * The reply packet libmilter would send for smfi_setreply (n == 1) or
 * smfi_setmlreply (n > 1) with these arguments, into wire (its data, NUL
 * included: *wirelen octets).  -1 with the reason in why when libmilter
 * would refuse the arguments (MI_FAILURE: the MTA then sends its own
 * reply) or when the packet is one that Postfix or Sendmail would not take
 * (tests/mproto.c, mp_reply_check).
 */
int fz_milter_reply(const char *rcode, const char *xcode, const char *const *lines,
    size_t n, char *wire, size_t wiresize, size_t *wirelen, char *why, size_t whylen);

/* Stop with "fuzz: <what>" on stderr: a broken promise, kept as a crash. */
void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define FZ_CHECK(cond, ...) do { if (!(cond)) fz_fail(__VA_ARGS__); } while (0)

#endif
