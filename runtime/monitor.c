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
//   fd 6  write end of the container's stdin pipe (flag i without t)
//   fd 7  listening SOCK_SEQPACKET socket for attach sessions
//   argv  <log path> <exit file> <max log bytes> <max rotated files> [flags]
//         flags: t = the container has a TTY, whose master comes as a second
//         fd with the pidfd (its output is logged as stdout); i = stdin is
//         open; o = stdin closes when the first attach session ends
//
// Attach protocol, one message per packet, a tag byte then the payload:
// from the monitor 'o' stdout and 'e' stderr data; to it 'i' stdin data,
// 'c' close stdin (^D for a TTY), 'r' resize (uint16 width, height, host
// byte order). The monitor closes the sessions when it exits.
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
#define MAX_CLIENTS 16

struct attach {
	int lfd;
	int c[MAX_CLIENTS];
	int in_fd; // stdin pipe or TTY master; -1 when closed
	int tty, once;
};

static void broadcast(struct attach *a, char tag, const char *p, size_t n)
{
	static char buf[1 + 65536];
	int i;
	if (!a)
		return;
	buf[0] = tag;
	memcpy(buf + 1, p, n);
	for (i = 0; i < MAX_CLIENTS; i++) {
		if (a->c[i] < 0)
			continue;
		// A session that does not keep up is dropped, never waited for.
		if (send(a->c[i], buf, n + 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			close(a->c[i]);
			a->c[i] = -1;
		}
	}
}

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
static void consume(struct stream *s, struct logfile *l, struct attach *a)
{
	char chunk[65536];
	ssize_t n = read(s->fd, chunk, sizeof(chunk));
	size_t i;
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n > 0)
		broadcast(a, s->name[3] == 'o' ? 'o' : 'e', chunk, n);
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
static int recv_init(int sock, int *pid, int *extra)
{
	char buf[32];
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(2 * sizeof(int))];
	} cm;
	int fds[2] = {-1, -1};
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
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
		return -1;
	if (c->cmsg_len == CMSG_LEN(2 * sizeof(int)))
		memcpy(fds, CMSG_DATA(c), 2 * sizeof(int));
	else if (c->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(fds, CMSG_DATA(c), sizeof(int));
	else
		return -1;
	fd = fds[0];
	*extra = fds[1];
	*pid = atoi(buf);
	if (*pid <= 0) {
		close(fd);
		if (*extra >= 0)
			close(*extra);
		return -1;
	}
	return fd;
}

// write_all writes to a (non-blocking) fd, waiting up to 10s for room.
static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			if (poll(&pfd, 1, 10000) <= 0)
				return;
			continue;
		}
		if (w <= 0)
			return;
		p += w;
		n -= w;
	}
}

static void stdin_close(struct attach *a)
{
	if (a->in_fd < 0)
		return;
	if (a->tty) {
		write_all(a->in_fd, "\x04", 1);
		return;
	}
	close(a->in_fd);
	a->in_fd = -1;
}

static void client_input(struct attach *a, int i)
{
	static char buf[1 + 65536];
	ssize_t n = recv(a->c[i], buf, sizeof(buf), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		close(a->c[i]);
		a->c[i] = -1;
		if (a->once)
			stdin_close(a);
		return;
	}
	switch (buf[0]) {
	case 'i':
		if (a->in_fd >= 0)
			write_all(a->in_fd, buf + 1, n - 1);
		break;
	case 'c':
		stdin_close(a);
		break;
	case 'r':
		if (a->tty && a->in_fd >= 0 && n >= 5) {
			struct winsize ws;
			uint16_t w, h;
			memcpy(&w, buf + 1, 2);
			memcpy(&h, buf + 3, 2);
			memset(&ws, 0, sizeof(ws));
			ws.ws_col = w;
			ws.ws_row = h;
			ioctl(a->in_fd, TIOCSWINSZ, &ws);
		}
		break;
	}
}

static void client_accept(struct attach *a)
{
	int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK), i;
	if (fd < 0)
		return;
	for (i = 0; i < MAX_CLIENTS; i++) {
		if (a->c[i] < 0) {
			a->c[i] = fd;
			return;
		}
	}
	close(fd);
}

static int monitor(int argc, char **argv)
{
	struct stream out = {.fd = 3, .name = "stdout"}, err = {.fd = 4, .name = "stderr"};
	struct logfile l;
	int pidfd, pid = 0, status = -2, exited = 0, master = -1, i;
	struct timespec deadline = {0};
	struct attach att = {.lfd = -1, .in_fd = -1};
	const char *flags = argc > 5 ? argv[5] : "";

	if (argc < 5)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	l.path = argv[1];
	l.max = atoll(argv[3]);
	l.maxfiles = atoi(argv[4]);
	for (i = 0; i < MAX_CLIENTS; i++)
		att.c[i] = -1;
	att.tty = strchr(flags, 't') != NULL;
	att.once = strchr(flags, 'o') != NULL;
	if (argc > 5)
		att.lfd = 7;
	if (strchr(flags, 'i') && !att.tty)
		att.in_fd = 6;
	pidfd = recv_init(5, &pid, &master);
	close(5);
	if (pidfd < 0)
		return 0; // the container did not start
	if (att.tty) {
		// The TTY master is the container's only output, and its input.
		close(out.fd);
		close(err.fd);
		err.fd = -1;
		out.fd = master;
		if (strchr(flags, 'i'))
			att.in_fd = master;
	}
	log_open(&l);
	fcntl(out.fd, F_SETFL, fcntl(out.fd, F_GETFL) | O_NONBLOCK);
	if (err.fd >= 0)
		fcntl(err.fd, F_SETFL, fcntl(err.fd, F_GETFL) | O_NONBLOCK);
	if (att.in_fd >= 0)
		fcntl(att.in_fd, F_SETFL, fcntl(att.in_fd, F_GETFL) | O_NONBLOCK);

	for (;;) {
		struct pollfd fds[4 + MAX_CLIENTS];
		int nfds = 0, timeout = -1;
		if (out.fd >= 0)
			fds[nfds++] = (struct pollfd){.fd = out.fd, .events = POLLIN};
		if (err.fd >= 0)
			fds[nfds++] = (struct pollfd){.fd = err.fd, .events = POLLIN};
		if (!exited)
			fds[nfds++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
		if (att.lfd >= 0 && !exited)
			fds[nfds++] = (struct pollfd){.fd = att.lfd, .events = POLLIN};
		for (i = 0; i < MAX_CLIENTS && !exited; i++)
			if (att.c[i] >= 0)
				fds[nfds++] = (struct pollfd){.fd = att.c[i], .events = POLLIN};
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
			int j;
			if (!fds[i].revents)
				continue;
			if (fds[i].fd == out.fd)
				consume(&out, &l, &att);
			else if (fds[i].fd == err.fd)
				consume(&err, &l, &att);
			else if (fds[i].fd == att.lfd)
				client_accept(&att);
			else if (fds[i].fd != pidfd) {
				for (j = 0; j < MAX_CLIENTS; j++)
					if (att.c[j] == fds[i].fd)
						client_input(&att, j);
			} else {
				status = exit_status(pidfd, pid);
				exited = 1;
				clock_gettime(CLOCK_MONOTONIC, &deadline);
				deadline.tv_sec += 2;
			}
		}
	}
	if (out.fd >= 0)
		consume(&out, &l, &att); // flush partial lines
	if (err.fd >= 0)
		consume(&err, &l, &att);
	if (l.f)
		fclose(l.f);
	write_exit(argv[2], status);
	for (i = 0; i < MAX_CLIENTS; i++)
		if (att.c[i] >= 0)
			close(att.c[i]);
	return 0;
}

__attribute__((constructor(101))) static void orch_monitor_entry(int argc, char **argv, char **envp)
{
	const char *v = getenv("_ORCH_MONITOR");
	(void)envp;
	if (v && strcmp(v, "1") == 0)
		_exit(monitor(argc, argv));
}
