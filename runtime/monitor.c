// The container monitor: a tiny C program that lives inside the orch binary
// and runs from an ELF constructor before the Go runtime starts when the
// binary is executed with _ORCH_MONITOR=1 in its environment (the same trick
// runc's nsenter uses). One monitor runs per container for the container's
// whole life and survives restarts of orch:
//
//   fd 3  read end of the container's stdout pipe
//   fd 4  read end of the container's stderr pipe
//   fd 5  control socket: one message carries the init's pid (decimal
//         text) and a pidfd of it (SCM_RIGHTS); EOF instead means the
//         container did not start, and the monitor exits at once
//   argv  <log path> <exit file> <max log bytes> <max rotated files>
//
// orch starts the monitor while libcontainer starts the container, so the
// monitor's exec is off the container start's critical path.
//
// It writes every line it reads in the CRI log format
// ("<RFC3339Nano> stdout|stderr F|P <line>"), rotating the file by size, and
// when the init exits it records the wait status and the finish time in the
// exit file (written atomically) and exits. The exit status comes from the
// pidfd (PIDFD_GET_INFO/PIDFD_INFO_EXIT, Linux >= 6.15), which works whoever
// reaps the process, or else from the zombie's /proc/<pid>/stat, checked
// against the pidfd so a recycled pid is never read.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

struct orch_pidfd_info {
	uint64_t mask;
	uint64_t cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;
};
#define ORCH_PIDFD_INFO_EXIT (1UL << 3)
#define ORCH_PIDFD_GET_INFO _IOWR(0xFF, 11, struct orch_pidfd_info)

#define MAX_LINE (16 * 1024)

struct stream {
	int fd;
	const char *name;
	char buf[MAX_LINE];
	size_t len;
	int eof;
};

struct logfile {
	const char *path;
	FILE *f;
	long long size, max;
	int maxfiles;
};

static void ts_now(char *out, size_t n)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
}

static void log_open(struct logfile *l)
{
	struct stat st;
	l->f = fopen(l->path, "ae");
	l->size = 0;
	if (l->f && fstat(fileno(l->f), &st) == 0)
		l->size = st.st_size;
}

// rotate renames <path> to <path>.1, shifting older files up to maxfiles.
static void log_rotate(struct logfile *l)
{
	char from[4200], to[4200];
	int i;
	if (l->f)
		fclose(l->f);
	snprintf(to, sizeof(to), "%s.%d", l->path, l->maxfiles);
	unlink(to);
	for (i = l->maxfiles - 1; i >= 1; i--) {
		snprintf(from, sizeof(from), "%s.%d", l->path, i);
		snprintf(to, sizeof(to), "%s.%d", l->path, i + 1);
		rename(from, to);
	}
	snprintf(to, sizeof(to), "%s.1", l->path);
	if (l->maxfiles > 0)
		rename(l->path, to);
	else
		unlink(l->path);
	log_open(l);
}

static void log_line(struct logfile *l, const char *stream, char tag, const char *p, size_t n)
{
	char ts[64];
	int w;
	if (!l->f)
		return;
	if (l->max > 0 && l->size >= l->max)
		log_rotate(l);
	if (!l->f)
		return;
	ts_now(ts, sizeof(ts));
	w = fprintf(l->f, "%s %s %c ", ts, stream, tag);
	if (w > 0)
		l->size += w;
	l->size += fwrite(p, 1, n, l->f);
	fputc('\n', l->f);
	l->size++;
}

// consume reads what is available on s and logs every complete line; a line
// longer than MAX_LINE is logged in partial (P) pieces.
static void consume(struct stream *s, struct logfile *l)
{
	char chunk[65536];
	ssize_t n = read(s->fd, chunk, sizeof(chunk));
	size_t i;
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		if (s->len > 0)
			log_line(l, s->name, 'F', s->buf, s->len);
		s->len = 0;
		s->eof = 1;
		close(s->fd);
		s->fd = -1;
		return;
	}
	for (i = 0; i < (size_t)n; i++) {
		char c = chunk[i];
		if (c == '\n') {
			log_line(l, s->name, 'F', s->buf, s->len);
			s->len = 0;
			continue;
		}
		if (s->len == MAX_LINE) {
			log_line(l, s->name, 'P', s->buf, s->len);
			s->len = 0;
		}
		s->buf[s->len++] = c;
	}
	if (l->f)
		fflush(l->f);
}

// zombie_status reads the exit code of an unreaped process from
// /proc/<pid>/stat (field 52); -1 if it cannot.
static int zombie_status(int pid)
{
	char path[64], buf[4096], *p;
	int fd, field;
	ssize_t n;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || p[2] != 'Z')
		return -1;
	p += 2; // field 3
	for (field = 3; field < 52 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p)
		return -1;
	return atoi(p);
}

static int exit_status(int pidfd, int pid)
{
	int tries;
	for (tries = 0; tries < 5000; tries++) {
		struct orch_pidfd_info info;
		int st;
		memset(&info, 0, sizeof(info));
		info.mask = ORCH_PIDFD_INFO_EXIT;
		if (ioctl(pidfd, ORCH_PIDFD_GET_INFO, &info) == 0 && (info.mask & ORCH_PIDFD_INFO_EXIT))
			return info.exit_code;
		st = zombie_status(pid);
		// The pidfd still refers to the process after the read, so the
		// pid was not recycled in between: the status is the init's.
		if (st >= 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0)
			return st;
		usleep(1000);
	}
	return -1;
}

static void write_exit(const char *path, int status)
{
	char tmp[4200], ts[64];
	struct timespec now;
	FILE *f;
	clock_gettime(CLOCK_REALTIME, &now);
	ts_now(ts, sizeof(ts));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f)
		return;
	fprintf(f, "%d %lld\n", status, (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
	fclose(f);
	rename(tmp, path);
}

// recv_init reads the init's pid and pidfd from the control socket; -1 on
// EOF or a malformed message.
static int recv_init(int sock, int *pid)
{
	char buf[32];
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cm;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
	struct cmsghdr *c;
	ssize_t n;
	int fd;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	*pid = atoi(buf);
	if (*pid <= 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int monitor(int argc, char **argv)
{
	struct stream out = {.fd = 3, .name = "stdout"}, err = {.fd = 4, .name = "stderr"};
	struct logfile l;
	int pidfd, pid = 0, status = -2, exited = 0;
	struct timespec deadline = {0};

	if (argc < 5)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	l.path = argv[1];
	l.max = atoll(argv[3]);
	l.maxfiles = atoi(argv[4]);
	pidfd = recv_init(5, &pid);
	close(5);
	if (pidfd < 0)
		return 0; // the container did not start
	log_open(&l);
	fcntl(out.fd, F_SETFL, fcntl(out.fd, F_GETFL) | O_NONBLOCK);
	fcntl(err.fd, F_SETFL, fcntl(err.fd, F_GETFL) | O_NONBLOCK);

	for (;;) {
		struct pollfd fds[3];
		int nfds = 0, timeout = -1, i;
		if (out.fd >= 0)
			fds[nfds++] = (struct pollfd){.fd = out.fd, .events = POLLIN};
		if (err.fd >= 0)
			fds[nfds++] = (struct pollfd){.fd = err.fd, .events = POLLIN};
		if (!exited)
			fds[nfds++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
		if (exited) {
			struct timespec now;
			// After the init exits, drain the pipes until every writer is
			// gone, but give up waiting for stray writers after 2s.
			if (out.fd < 0 && err.fd < 0)
				break;
			clock_gettime(CLOCK_MONOTONIC, &now);
			timeout = (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
			if (timeout <= 0)
				break;
		}
		if (poll(fds, nfds, timeout) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (i = 0; i < nfds; i++) {
			if (!fds[i].revents)
				continue;
			if (fds[i].fd == out.fd)
				consume(&out, &l);
			else if (fds[i].fd == err.fd)
				consume(&err, &l);
			else if (fds[i].fd == pidfd) {
				status = exit_status(pidfd, pid);
				exited = 1;
				clock_gettime(CLOCK_MONOTONIC, &deadline);
				deadline.tv_sec += 2;
			}
		}
	}
	if (out.fd >= 0)
		consume(&out, &l); // flush partial lines
	if (err.fd >= 0)
		consume(&err, &l);
	if (l.f)
		fclose(l.f);
	write_exit(argv[2], status);
	return 0;
}

__attribute__((constructor(101))) static void orch_monitor_entry(int argc, char **argv, char **envp)
{
	const char *v = getenv("_ORCH_MONITOR");
	(void)envp;
	if (v && strcmp(v, "1") == 0)
		_exit(monitor(argc, argv));
}
