/* stampwrap: the supervised program of the restart benchmark.
 *
 * Compiled by scripts/bench.sh with -DTARGET="\"/path/to/sample-agent\"".
 * It takes a CLOCK_MONOTONIC stamp first thing in main(), runs TARGET as a
 * child with the same arguments and environment, forwards SIGTERM/SIGINT/
 * SIGHUP to it, and once the child is reaped takes a second stamp, appends
 * "START_NS END_NS\n" to $BENCH_STAMPS with one write(2), and exits with
 * the child's status. The gap between one run's END and the next run's
 * START is the supervisor's reaction time (reap, bookkeeping, fork, exec).
 * `--version` is handed straight to TARGET (the warden probes builds).
 * Other arguments are dropped (s6-supervise passes the service directory
 * to ./run; the agent takes none). Without $BENCH_STAMPS it simply execs
 * TARGET in its own place (the idle benchmark's ./run). With
 * $BENCH_NOTIFY_FD it first writes a newline to that descriptor and closes
 * it: readiness for s6-supervise's notification-fd.
 * Statically linked so that its own exec costs the same under every
 * supervisor and as little as possible.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TARGET
#error "compile with -DTARGET=..."
#endif

static volatile pid_t child;

static void forward(int sig) {
    if (child > 0) kill(child, sig);
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long long start = now_ns();
    (void)argc;
    if (argv[1] && strcmp(argv[1], "--version") == 0) {
        execv(TARGET, argv);
        perror("stampwrap: exec " TARGET);
        return 127;
    }
    char *args[] = {argv[0], NULL};
    const char *nfd = getenv("BENCH_NOTIFY_FD");
    if (nfd) {
        int f = atoi(nfd);
        if (write(f, "\n", 1) != 1) return 111;
        close(f);
    }
    const char *path = getenv("BENCH_STAMPS");
    if (!path) {
        execv(TARGET, args);
        perror("stampwrap: exec " TARGET);
        return 127;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    pid_t pid = fork();
    if (pid < 0) return 111;
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        execv(TARGET, args);
        _exit(127);
    }
    child = pid;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    long long end = now_ns();
    if (fd >= 0) {
        char line[64];
        int n = snprintf(line, sizeof line, "%lld %lld\n", start, end);
        if (write(fd, line, n) != n) return 111;
    }
    if (WIFSIGNALED(st)) {
        signal(WTERMSIG(st), SIG_DFL);
        raise(WTERMSIG(st));
        return 128 + WTERMSIG(st);
    }
    return WEXITSTATUS(st);
}
