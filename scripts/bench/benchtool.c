/* benchtool: small timing helpers for scripts/bench.sh, so that no shell
 * loop or curl process sits inside a measured interval.
 *
 *   benchtool poll-update PORT VERSION TIMEOUT_S
 *       GET /v1/metadata on 127.0.0.1:PORT in a tight loop (every 0.5 ms
 *       while it answers, every 0.2 ms while it does not) until the answer
 *       carries VERSION. Prints "gap_ms G" where G is the time between the
 *       last answer before the change and the first answer with VERSION,
 *       i.e. how long the endpoint was unreachable (or answered non-200).
 *       Exits 1 on timeout. Then "last_ok_rt_ns A new_rt_ns B": the
 *       CLOCK_REALTIME of those two answers, to line up with the engine's
 *       event times.
 *   benchtool wait-answer PORT VERSION TIMEOUT_S
 *       Poll as above (every 0.2 ms) until /v1/metadata answers 200 with
 *       VERSION ("-": any version). Prints "rt_ns T": the CLOCK_REALTIME
 *       of that first answer. Exits 1 on timeout.
 *   benchtool coldstart N PROGRAM [ARGS...]
 *       N times: exec PROGRAM (environment inherited; it must serve
 *       /v1/metadata on $BENCH_PORT), time from fork to the first 200
 *       answer, then SIGTERM and reap it. Prints one "ms M stop_ms S"
 *       line per run (S: from SIGTERM to the exit being reaped). The
 *       program's stdout goes to benchtool's stderr.
 *   benchtool ready SOCKET PROGRAM [ARGS...]
 *       Bind a unix datagram socket at SOCKET, start PROGRAM with
 *       NOTIFY_SOCKET=SOCKET, time from fork to a datagram holding
 *       "READY=1", then SIGTERM and reap it. Prints "ms M".
 * All times are CLOCK_MONOTONIC unless named _rt.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long rt_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void pause_ns(long ns) {
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* One GET /v1/metadata. Returns 1 and fills body on a 200, 0 otherwise. */
static int get_metadata(int port, char *buf, size_t cap) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return 0;
    struct timeval tv = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        close(s);
        return 0;
    }
    /* Nothing listens and the kernel picked PORT as our ephemeral port: a
     * TCP self-connect, which would hold the port the server is about to
     * bind. Let go of it at once. */
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    if (getsockname(s, (struct sockaddr *)&me, &len) == 0 && me.sin_port == a.sin_port) {
        struct linger l = {1, 0};
        setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close(s);
        return 0;
    }
    static const char req[] =
        "GET /v1/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (write(s, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
        close(s);
        return 0;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(s, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += r;
        if (n >= cap - 1) break;
    }
    close(s);
    buf[n] = 0;
    return n > 12 && strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 9, "200", 3) == 0 &&
           strstr(buf, "\"Version\"") != NULL;
}

static int poll_update(int port, const char *version, double timeout_s) {
    char buf[8192];
    char needle[128];
    snprintf(needle, sizeof needle, " - v%s ", version);
    long long start = now_ns(), deadline = start + (long long)(timeout_s * 1e9);
    long long last_ok = 0, last_ok_rt = 0;
    long attempts_failed = 0;
    for (;;) {
        long long t = now_ns();
        if (t > deadline) {
            fprintf(stderr, "benchtool: version %s did not answer within %.0f s\n", version, timeout_s);
            return 1;
        }
        if (get_metadata(port, buf, sizeof buf)) {
            long long got = now_ns(), got_rt = rt_ns();
            if (strstr(buf, needle)) {
                if (!last_ok) {
                    fprintf(stderr, "benchtool: %s answered before any older version was seen\n", version);
                    return 1;
                }
                printf("gap_ms %.3f failed_polls %ld last_ok_rt_ns %lld new_rt_ns %lld\n",
                       (got - last_ok) / 1e6, attempts_failed, last_ok_rt, got_rt);
                return 0;
            }
            last_ok = got;
            last_ok_rt = got_rt;
            pause_ns(500000);
        } else {
            if (last_ok) attempts_failed++;
            pause_ns(200000);
        }
    }
}

static int wait_answer(int port, const char *version, double timeout_s) {
    char buf[8192];
    char needle[128];
    snprintf(needle, sizeof needle, " - v%s ", version);
    int any = strcmp(version, "-") == 0;
    long long deadline = now_ns() + (long long)(timeout_s * 1e9);
    while (now_ns() < deadline) {
        if (get_metadata(port, buf, sizeof buf) && (any || strstr(buf, needle))) {
            long long t = rt_ns();
            printf("rt_ns %lld\n", t);
            return 0;
        }
        pause_ns(200000);
    }
    fprintf(stderr, "benchtool: no answer%s%s on port %d within %.0f s\n", any ? "" : " from ",
            any ? "" : version, port, timeout_s);
    return 1;
}

static pid_t spawn(char **argv) {
    pid_t pid = fork();
    if (pid == 0) {
        dup2(2, 1); /* the program's output must not mix with ours */
        execvp(argv[0], argv);
        perror("benchtool: exec");
        _exit(127);
    }
    return pid;
}

/* SIGTERM, then reap; returns the ms it took, or -1 after a SIGKILL. */
static double stop(pid_t pid) {
    long long t0 = now_ns();
    kill(pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 300000; i++) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return (now_ns() - t0) / 1e6;
        pause_ns(100000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fprintf(stderr, "benchtool: pid %d ignored SIGTERM for 30 s\n", (int)pid);
    return -1;
}

static int coldstart(int n, char **argv) {
    const char *p = getenv("BENCH_PORT");
    if (!p) {
        fprintf(stderr, "benchtool: set BENCH_PORT\n");
        return 2;
    }
    int port = atoi(p);
    char buf[8192];
    for (int i = 0; i < n; i++) {
        long long t0 = now_ns();
        pid_t pid = spawn(argv);
        long long deadline = t0 + 20000000000LL;
        int ok = 0;
        while (now_ns() < deadline) {
            if (get_metadata(port, buf, sizeof buf)) {
                ok = 1;
                break;
            }
            if (waitpid(pid, NULL, WNOHANG) == pid) break;
            pause_ns(200000);
        }
        long long t1 = now_ns();
        if (!ok) {
            fprintf(stderr, "benchtool: the program never answered on port %d\n", port);
            kill(pid, SIGKILL);
            return 1;
        }
        double stop_ms = stop(pid);
        if (stop_ms < 0) return 1;
        printf("ms %.3f stop_ms %.3f\n", (t1 - t0) / 1e6, stop_ms);
        fflush(stdout);
    }
    return 0;
}

static int ready(const char *path, char **argv) {
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path) return 2;
    strcpy(a.sun_path, path);
    unlink(path);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("benchtool: bind notify socket");
        return 1;
    }
    struct timeval tv = {30, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setenv("NOTIFY_SOCKET", path, 1);
    long long t0 = now_ns();
    pid_t pid = spawn(argv);
    char msg[4096];
    for (;;) {
        ssize_t r = recv(s, msg, sizeof msg - 1, 0);
        if (r < 0) {
            fprintf(stderr, "benchtool: no READY=1 within 30 s\n");
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return 1;
        }
        msg[r] = 0;
        if (strstr(msg, "READY=1")) break;
    }
    long long t1 = now_ns();
    printf("ms %.3f\n", (t1 - t0) / 1e6);
    fflush(stdout);
    double stop_ms = stop(pid);
    close(s);
    unlink(path);
    return stop_ms < 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 5 && strcmp(argv[1], "poll-update") == 0)
        return poll_update(atoi(argv[2]), argv[3], atof(argv[4]));
    if (argc >= 5 && strcmp(argv[1], "wait-answer") == 0)
        return wait_answer(atoi(argv[2]), argv[3], atof(argv[4]));
    if (argc >= 4 && strcmp(argv[1], "coldstart") == 0)
        return coldstart(atoi(argv[2]), argv + 3);
    if (argc >= 4 && strcmp(argv[1], "ready") == 0)
        return ready(argv[2], argv + 3);
    fprintf(stderr, "usage: benchtool poll-update PORT VERSION TIMEOUT_S | wait-answer PORT VERSION TIMEOUT_S | coldstart N PROG... | ready SOCKET PROG...\n");
    return 2;
}
