// SPDX-License-Identifier: GPL-2.0
/*
 * udpblast: the benchmarks' own small-UDP packet source and sink.
 *
 *   udpblast send DST_IPV4 PORT SECONDS [RATE_PPS] [PAYLOAD_BYTES]
 *   udpblast recv PORT SECONDS
 *
 * send: a connected socket and sendmmsg() batches, so that the sender's own
 * system call overhead stays small next to the kernel path being measured.
 * RATE_PPS 0 means as fast as possible; otherwise batches are paced against
 * CLOCK_MONOTONIC so a run offers a known load.
 * recv: recvmmsg() until SECONDS have passed since the first datagram, or
 * until 1 s of silence after the first datagram, or SIGINT/SIGTERM.
 * Both print one JSON object on stdout; the benchmark scripts parse it.
 * Built at bench time by bench/build.py; never installed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_PAYLOAD 1472

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int do_send(const char *dst, int port, double seconds, double rate, int payload)
{
	static char buf[MAX_PAYLOAD];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_in sa;
	unsigned long long sent = 0, errors = 0;
	double start, end, t, cpu;
	struct rusage ru;
	int fd, i;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	if (inet_pton(AF_INET, dst, &sa.sin_addr) != 1) {
		fprintf(stderr, "udpblast: bad address %s\n", dst);
		return 2;
	}
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("udpblast: socket/connect");
		return 1;
	}
	memset(buf, 'x', sizeof(buf));
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = buf;
		iov[i].iov_len = payload;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	start = now();
	end = start + seconds;
	for (t = start; t < end && !stop; t = now()) {
		int n;

		/* Paced: never get ahead of rate * elapsed. */
		if (rate > 0 && sent >= (t - start) * rate) {
			struct timespec nap = { 0, 20000 };

			nanosleep(&nap, NULL);
			continue;
		}
		n = sendmmsg(fd, msgs, BATCH, 0);
		if (n < 0) {
			/* veth backlog full (ENOBUFS) or a transient ICMP error: keep going, count it. */
			errors++;
			continue;
		}
		sent += n;
	}
	t = now() - start;
	/*
	 * CPU time of this process: on a veth pair the receive softirq runs on
	 * return from our send, so it is charged here too. Per packet, it is a
	 * cost that other load on the machine barely disturbs, unlike pps.
	 */
	getrusage(RUSAGE_SELF, &ru);
	cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	printf("{\"mode\": \"send\", \"sent\": %llu, \"errors\": %llu, \"seconds\": %.6f, \"pps\": %.1f, "
	       "\"cpu_seconds\": %.6f}\n", sent, errors, t, sent / t, cpu);
	close(fd);
	return 0;
}

static int do_recv(int port, double seconds)
{
	static char bufs[BATCH][MAX_PAYLOAD];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_in sa;
	struct timeval tv = { 0, 100000 };
	unsigned long long got = 0;
	double first = 0, last = 0, t;
	int fd, i, rcvbuf = 8 << 20;

	fd = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("udpblast: socket/bind");
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = MAX_PAYLOAD;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	/* The "ready" line lets the caller start the sender only once we are bound. */
	printf("{\"mode\": \"ready\"}\n");
	fflush(stdout);
	while (!stop) {
		int n = recvmmsg(fd, msgs, BATCH, 0, NULL);

		t = now();
		if (n > 0) {
			if (!got)
				first = t;
			got += n;
			last = t;
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			perror("udpblast: recvmmsg");
			return 1;
		}
		if (got && (t - first >= seconds || t - last >= 1.0))
			break;
	}
	printf("{\"mode\": \"recv\", \"received\": %llu, \"seconds\": %.6f}\n", got,
	       got ? last - first : 0.0);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 5 && !strcmp(argv[1], "send")) {
		double rate = argc > 5 ? atof(argv[5]) : 0;
		int payload = argc > 6 ? atoi(argv[6]) : 18;

		if (payload < 0 || payload > MAX_PAYLOAD) {
			fprintf(stderr, "udpblast: payload out of range\n");
			return 2;
		}
		return do_send(argv[2], atoi(argv[3]), atof(argv[4]), rate, payload);
	}
	if (argc >= 4 && !strcmp(argv[1], "recv"))
		return do_recv(atoi(argv[2]), atof(argv[3]));
	fprintf(stderr, "usage: udpblast send DST PORT SECONDS [RATE_PPS] [PAYLOAD] | recv PORT SECONDS\n");
	return 2;
}
