/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * main - start-up, privileges, signals and the life of the daemon.
 *
 * Order matters: load and check the configuration (fatal on error), open
 * the milter socket as the starting user (root can bind anywhere), give the
 * socket to the run-time user, drop privileges completely, start the helper
 * threads, then hand the main thread to libmilter until SIGTERM.  The
 * metrics endpoint (optional) is bound with the milter socket, before the
 * fork of daemon(), and served by its own thread started after it.
 *
 * Signals: libmilter takes SIGHUP, SIGINT and SIGTERM as "stop".  SIGUSR1
 * reloads the configuration; it is blocked in every thread and taken by a
 * dedicated thread with sigwait(), so that reloading runs in ordinary
 * thread context, never in a signal handler.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include "milter/callbacks.h"
#include "milter/cfg.h"
#include "milter/check.h"
#include "milter/engine.h"
#include "milter/log.h"
#include "milter/metrics.h"
#include "milter/metrics_http.h"
#include "milter/reuse.h"
#include "milter/stats.h"
#include "milter/store_redis.h"

#ifndef PM_SYSCONFDIR
#define PM_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG PM_SYSCONFDIR "/policy-milter/policy-milter.conf"

static const char *config_path = DEFAULT_CONFIG;
static volatile int stopping;
static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: policy-milter [-c FILE] [-f] [-n] [-d] [-p PIDFILE] [-V]\n"
	    "\n"
	    "A mail filter for Postfix and Sendmail that applies the policies of\n"
	    "its configuration file: sizes, recipient counts, with counters in Redis.\n"
	    "\n"
	    "  -c FILE     configuration file (default %s)\n"
	    "  -f          stay in the foreground and log to stderr\n"
	    "  -n          check the configuration, print \"configuration OK\" or\n"
	    "              every error as FILE:LINE: message, exit 0 or 1\n"
	    "  --connect   with -n: also reach Redis and run what the daemon runs\n"
	    "              there (an ACL that denies a command is named)\n"
	    "  -d          debug logging\n"
	    "  -p PIDFILE  write the process id to PIDFILE\n"
	    "  -V          print the version and exit\n"
	    "  -h, --help  this text\n"
	    "\n"
	    "Exit status: 0 after a clean stop, 78 (EX_CONFIG) when the configuration\n"
	    "has errors, 1 on other failures.\n"
	    "Signals: SIGUSR1 reloads the configuration (a broken file is logged and\n"
	    "the old configuration stays), SIGTERM stops.\n", DEFAULT_CONFIG);
}

static void
report_stderr(void *arg, bool is_error, const char *msg)
{
	(void)arg;
	(void)is_error;
	fprintf(stderr, "%s\n", msg);
}

static void
report_log(void *arg, bool is_error, const char *msg)
{
	(void)arg;
	log_msg(is_error ? LOG_ERR : LOG_WARNING, "%s", msg);
}

/* Start-up as a daemon: to the log, and to the terminal that started us. */
static void
report_both(void *arg, bool is_error, const char *msg)
{
	report_log(arg, is_error, msg);
	report_stderr(arg, is_error, msg);
}

/*
 * A reason not to start, before we leave the terminal: logged, and shown
 * on stderr too when logging goes to syslog only (an init script or a
 * user at a shell would otherwise see nothing but the exit status).
 */
static void start_error(bool foreground, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
start_error(bool foreground, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_msg(LOG_ERR, "%s", msg);
	if (!foreground)
		fprintf(stderr, "policy-milter: %s\n", msg);
}

/*
 * Open and lock the pid file before anything else can clash with a running
 * instance (binding the socket would remove its socket).  O_NOFOLLOW: we
 * are root here, and a symbolic link planted where the pid file goes must
 * not make us truncate whatever it points to; a file with other names (hard
 * links) is refused for the same reason.  The lock (flock: it follows the
 * open file into the child that daemon() makes) lives as long as we do.
 * Returns the descriptor, or -1 after saying why.
 */
static int
open_pidfile(const char *path, bool foreground)
{
	struct stat st;
	char buf[32];
	ssize_t len;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		if (errno == ELOOP)
			start_error(foreground, "pid file %s is a symbolic link; refusing "
			    "to follow it", path);
		else
			start_error(foreground, "pid file %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
		start_error(foreground, "pid file %s is not a plain file with one name; "
		    "refusing to use it", path);
		close(fd);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK) {
			len = pread(fd, buf, sizeof(buf) - 1, 0);
			buf[len > 0 ? len : 0] = '\0';
			buf[strcspn(buf, "\n")] = '\0';
			start_error(foreground, "already running as PID %s (pid file %s)",
			    buf[0] != '\0' ? buf : "?", path);
		} else {
			start_error(foreground, "pid file %s: cannot lock it: %s", path,
			    strerror(errno));
		}
		close(fd);
		return -1;
	}
	return fd;
}

/* Our pid into the locked file (after daemon(): the pid that stays). */
static void
write_pidfile(int fd, const char *path)
{
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len)
		log_msg(LOG_WARNING, "pid file %s: cannot write it: %s", path,
		    strerror(errno));
}

/* SIGUSR1 and a changed list file may ask at once: one reload at a time. */
static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;

static bool
same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void
reload(const char *why)
{
	struct cfg *old, *c;

	pthread_mutex_lock(&reload_lock);
	old = cfg_acquire();
	log_msg(LOG_NOTICE, "reloading %s (%s)", config_path, why);
	c = cfg_load(config_path, old, report_log, NULL);
	metrics_reload(c != NULL);
	if (c == NULL) {
		log_msg(LOG_ERR, "reload failed: keeping the old configuration");
	} else {
		if (old != NULL && (strcmp(old->listen, c->listen) != 0 ||
		    (old->user && (!c->user || strcmp(old->user, c->user) != 0))))
			log_msg(LOG_WARNING, "listen, user and group take effect only "
			    "after a restart");
		if (old != NULL && !same_str(old->metrics, c->metrics))
			log_msg(LOG_WARNING, "metrics takes effect only after a restart; "
			    "the endpoint stays %s%s", old->metrics ? "on " : "off",
			    old->metrics ? old->metrics : "");
		cfg_install(c);
		log_msg(LOG_NOTICE, "configuration reloaded: %zu policies", c->npolicies);
	}
	cfg_unref(old);
	pthread_mutex_unlock(&reload_lock);
}

static void *
signal_thread(void *arg)
{
	sigset_t set;
	int sig;

	(void)arg;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	while (!stopping) {
		if (sigwait(&set, &sig) == 0 && sig == SIGUSR1 && !stopping)
			reload("SIGUSR1");
	}
	return NULL;
}

static void
flush_stats(void)
{
	static struct log_throttle throttle;
	struct cfg *c = cfg_acquire();
	char err[256];

	if (c != NULL && c->redis != NULL &&
	    stats_flush(c->redis->store, c->redis->prefix, err, sizeof(err)) != 0)
		log_ratelimited(&throttle, 10, LOG_WARNING,
		    "statistics kept in memory until Redis answers: %s", err);
	cfg_unref(c);
}

/*
 * A list file changed since the configuration in force was loaded, and not
 * into the state we already tried (a broken file is reported once, not
 * every second)?
 */
static bool
lists_changed(void)
{
	static long long tried;
	struct cfg *c = cfg_acquire();
	long long stamp = 0;
	bool changed = c != NULL && cfg_files_changed(c, &stamp) && stamp != tried;

	if (changed)
		tried = stamp;
	cfg_unref(c);
	return changed;
}

/*
 * Once a second: statistics to Redis, and a look at the list files' times
 * (a changed file reloads the configuration here, off the SMTP path: a
 * connection keeps the lists it started with).  Counting never waits for
 * this thread.
 */
/*
 * Until Redis has answered once after start, try it with a growing pause
 * (1, 2, 4 ... 60 s) and say at error level what to check each time: a
 * Redis that never came up must not pass for a warning nobody reads.
 * Returns true once it answered.
 */
static bool
redis_reachable(unsigned *pause_s, time_t *next)
{
	struct cfg *c = cfg_acquire();
	char err[512] = "";
	redisReply *r;
	bool ok = true;
	time_t now = time(NULL);

	if (c == NULL || c->redis == NULL || now < *next) {
		ok = c == NULL || c->redis == NULL ? true : false;
		cfg_unref(c);
		return ok;
	}
	const char *argv[1] = { "PING" };
	r = store_command(c->redis->store, 1, argv, NULL, err, sizeof(err));
	if (r != NULL && r->type != REDIS_REPLY_ERROR) {
		if (*pause_s > 1)
			log_msg(LOG_NOTICE, "Redis answers now: rate limits and live lists "
			    "are in force");
	} else {
		log_msg(LOG_ERR, "Redis does not answer: %s; rate limits and live lists "
		    "follow on_redis_error until it does.  Check that redis-server runs "
		    "and listens where the redis settings of %s say (redis-cli ping), and "
		    "the user and password.  Trying again in %u s",
		    r != NULL ? r->str : err, config_path, *pause_s);
		*next = now + *pause_s;
		*pause_s = *pause_s * 2 > 60 ? 60 : *pause_s * 2;
		ok = false;
	}
	store_reply_free(r);
	cfg_unref(c);
	return ok;
}

static void *
housekeeping_thread(void *arg)
{
	unsigned pause_s = 1;
	time_t next = 0;
	bool answered = false;

	(void)arg;
	pthread_mutex_lock(&stop_lock);
	while (!stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&stop_cond, &stop_lock, &ts);
		pthread_mutex_unlock(&stop_lock);
		if (!answered)
			answered = redis_reachable(&pause_s, &next);
		flush_stats();
		if (lists_changed())
			reload("a list file changed");
		pthread_mutex_lock(&stop_lock);
	}
	pthread_mutex_unlock(&stop_lock);
	return NULL;
}

/* Remove our socket, and nothing that is not a socket. */
static void
remove_socket(const char *path)
{
	struct stat sb;

	if (lstat(path, &sb) != 0 || !S_ISSOCK(sb.st_mode))
		return;
	if (unlink(path) != 0)
		log_msg(LOG_WARNING, "cannot remove %s: %s", path, strerror(errno));
}

/* Look up user and group; fatal when they do not exist. */
static void
lookup_ids(const struct cfg *c, uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam(c->user);

	if (pw == NULL) {
		log_msg(LOG_ERR, "user \"%s\" does not exist", c->user);
		exit(1);
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	if (c->group != NULL) {
		struct group *gr = getgrnam(c->group);
		if (gr == NULL) {
			log_msg(LOG_ERR, "group \"%s\" does not exist", c->group);
			exit(1);
		}
		*gid = gr->gr_gid;
	}
}

/* Drop to user (uid/gid) for good: supplementary groups, gid, uid, then verify. */
static void
drop_privileges(const char *user, uid_t uid, gid_t gid)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	/* The user's own supplementary groups (e.g. redis, for its socket). */
	if (initgroups(user, gid) != 0 || setresgid(gid, gid, gid) != 0 ||
	    setresuid(uid, uid, uid) != 0) {
		log_msg(LOG_ERR, "cannot drop privileges to %s: %s", user, strerror(errno));
		exit(1);
	}
	if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0 ||
	    ru != uid || eu != uid || su != uid || rg != gid || eg != gid || sg != gid ||
	    (uid != 0 && setuid(0) == 0)) {
		log_msg(LOG_ERR, "privileges were not dropped completely");
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "connect", no_argument, NULL, 'C' },
		{ NULL, 0, NULL, 0 },
	};
	bool foreground = false, check_only = false, debug = false, connect = false;
	const char *pidfile = NULL, *sock;
	struct metrics_http *metrics = NULL;
	struct cfg *c;
	sigset_t set;
	pthread_t sig_tid, stats_tid;
	uid_t uid = 0;
	gid_t gid = 0;
	int ch, rc, pidfd = -1;

	while ((ch = getopt_long(argc, argv, "c:fndp:Vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': config_path = optarg; break;
		case 'f': foreground = true; break;
		case 'n': check_only = true; break;
		case 'd': debug = true; break;
		case 'p': pidfile = optarg; break;
		case 'C': connect = true; break;
		case 'V':
			printf("policy-milter %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	if (check_only)
		return check_config(config_path, connect);

	/*
	 * Every thread inherits this mask, so it is set before anything else
	 * (a reload request during start-up waits instead of killing us).
	 * SIGUSR1 is for our signal thread; HUP, INT and TERM are for
	 * libmilter's, which smfi_main() starts later: a thread of ours with
	 * them unblocked would take SIGTERM and the process would die of it
	 * instead of stopping cleanly.
	 */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	log_open(foreground, debug);
	{
		struct timespec now;

		clock_gettime(CLOCK_REALTIME, &now);
		metrics_set_start_time((double)now.tv_sec + now.tv_nsec / 1e9);
	}
	c = cfg_load(config_path, NULL, foreground ? report_stderr : report_both, NULL);
	if (c == NULL) {
		start_error(foreground, "%s: configuration has errors; not starting",
		    config_path);
		return EX_CONFIG;
	}
	/* Before the socket: a second instance must not take the first one's.
	 * Our pid goes in at once (a second instance names it), and again
	 * after daemon() changed it. */
	if (pidfile != NULL) {
		if ((pidfd = open_pidfile(pidfile, foreground)) < 0) {
			cfg_unref(c);
			stats_reset();
			log_close();
			return 1;
		}
		write_pidfile(pidfd, pidfile);
	}
	/* main keeps its own reference: a reload may replace c at any time. */
	cfg_ref(c);
	cfg_install(c);

	if (c->user != NULL)
		lookup_ids(c, &uid, &gid);
	if (smfi_setconn((char *)(uintptr_t)c->listen) != MI_SUCCESS ||
	    callbacks_register() != 0) {
		start_error(foreground, "cannot set up the milter on %s", c->listen);
		return 1;
	}
	/* true: remove a stale socket left by a crash. */
	if (smfi_opensocket(true) != MI_SUCCESS) {
		start_error(foreground, "cannot listen on %s (in use, or no permission?)",
		    c->listen);
		return 1;
	}
	/* Bound now, with the milter socket: a port in use is said on the terminal. */
	if (c->metrics != NULL) {
		char err[512];

		if ((metrics = metrics_http_bind(c->metrics, err, sizeof(err))) == NULL) {
			start_error(foreground, "%s", err);
			cfg_unref(c);
			cfg_install(NULL);
			stats_reset();
			log_close();
			return 1;
		}
	}
	/* The socket bound now is the one to remove at exit, whatever a reload says. */
	sock = cfg_unix_socket_path(c->listen);
	if (sock != NULL) {
		if (c->socket_mode >= 0 && chmod(sock, (mode_t)c->socket_mode) != 0)
			log_msg(LOG_WARNING, "chmod %s: %s", sock, strerror(errno));
		if (c->user != NULL && getuid() == 0 && chown(sock, uid, gid) != 0)
			log_msg(LOG_WARNING, "chown %s: %s", sock, strerror(errno));
	}
	if (c->user != NULL && getuid() == 0)
		drop_privileges(c->user, uid, gid);
	else if (getuid() == 0 || geteuid() == 0)
		log_msg(LOG_WARNING, "running as root: set user (and group) in %s",
		    config_path);

	if (!foreground && daemon(0, 0) != 0) {
		start_error(foreground, "cannot become a daemon: %s", strerror(errno));
		return 1;
	}
	if (pidfd >= 0)
		write_pidfile(pidfd, pidfile);
	if (pthread_create(&sig_tid, NULL, signal_thread, NULL) != 0 ||
	    pthread_create(&stats_tid, NULL, housekeeping_thread, NULL) != 0) {
		log_msg(LOG_ERR, "cannot start threads");
		return 1;
	}
	if (metrics != NULL) {
		char err[512];

		if (metrics_http_start(metrics, err, sizeof(err)) != 0) {
			log_msg(LOG_ERR, "%s", err);
			return 1;
		}
		log_msg(LOG_NOTICE, "metrics endpoint on %s: GET /metrics", c->metrics);
	}
	log_msg(LOG_NOTICE, "policy-milter %s listening on %s with %zu policies",
	    PACKAGE_VERSION, c->listen, c->npolicies);

	rc = smfi_main();

	log_msg(LOG_NOTICE, "stopping");
	metrics_http_stop(metrics);
	pthread_mutex_lock(&stop_lock);
	stopping = 1;
	pthread_cond_broadcast(&stop_cond);
	pthread_mutex_unlock(&stop_lock);
	pthread_kill(sig_tid, SIGUSR1);
	pthread_join(sig_tid, NULL);
	pthread_join(stats_tid, NULL);
	flush_stats();
	if (sock != NULL)
		remove_socket(sock);
	cfg_unref(c);
	reuse_clear();
	cfg_install(NULL);
	engine_spare_free();
	/* After dropping privileges this works only where the user may write. */
	if (pidfile != NULL && unlink(pidfile) != 0 && errno != ENOENT)
		log_msg(LOG_WARNING, "cannot remove pid file %s: %s", pidfile, strerror(errno));
	log_close();
	return rc == MI_SUCCESS ? 0 : 1;
}
