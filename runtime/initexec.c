// Hand-off of a container's init to the small init binary.
//
// libcontainer starts a container's init (and each exec in a container) by
// re-executing its own binary, here the whole orch binary, with "init" as
// the argument. When the Runtime that starts it holds the small init
// (runtime/internal/initbin) in a sealed memfd named "orch-init", this
// constructor, which runs when the orch binary is loaded and before
// libcontainer's nsexec constructor and the Go runtime, finds that memfd
// among its parent's open files and executes it in place of itself, with
// the same arguments, environment and open files. The small init then does
// what the orch binary would have: nsexec, then libcontainer's Go init.
//
// Without such a memfd (or if the exec fails) the constructor returns and
// the orch binary goes on as the init itself.
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// What readlink returns for a memfd named "orch-init" (see initbin.go).
#define ORCH_INIT_LINK "/memfd:orch-init (deleted)"

__attribute__((constructor(102))) static void orch_init_handoff(int argc, char **argv, char **envp)
{
	struct dirent *e;
	char dir[64], path[64 + sizeof(e->d_name) + 1], target[sizeof(ORCH_INIT_LINK) + 1];
	DIR *d;

	if (argc < 2 || strcmp(argv[1], "init") != 0 || getenv("_LIBCONTAINER_INITPIPE") == NULL)
		return;
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)getppid());
	d = opendir(dir);
	if (d == NULL)
		return;
	// The memfd is opened early in the parent, so it has a low number;
	// the fds are listed in order.
	while ((e = readdir(d)) != NULL) {
		ssize_t n;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		if (n != (ssize_t)strlen(ORCH_INIT_LINK))
			continue;
		target[n] = '\0';
		if (strcmp(target, ORCH_INIT_LINK) != 0)
			continue;
		closedir(d);
		execve(path, argv, envp);
		return; // go on as the orch binary
	}
	closedir(d);
}
