// SPDX-License-Identifier: Apache-2.0
/*
 * pwproxy — a transparent outbound proxy fixture that behaves like Envoy's
 * virtualOutbound listener in an Istio sidecar: it listens on 0.0.0.0:PORT,
 * runs as the proxy uid, asks every accepted connection for its original
 * destination with getsockopt(SOL_IP, SO_ORIGINAL_DST), connects there and
 * relays both directions.
 *
 *   pwproxy -p 15001 -u 1337 [-a CPU]
 *
 * One JSON line per connection on stdout: {"odst":"10.1.2.3:7000","ok":true}
 * (or {"error":"…"}), so a test can check every original destination.
 * Works the same whether SO_ORIGINAL_DST is answered by conntrack (iptables
 * REDIRECT) or by podwarp's cgroup/getsockopt program.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void report(const char *fmt, const char *a, int b)
{
	printf(fmt, a, b);
	fflush(stdout);
}

/* Relays until both directions are closed. */
static void relay(int a, int b)
{
	char buf[65536];
	int open_ab = 1, open_ba = 1;

	while (open_ab || open_ba) {
		struct pollfd p[2] = { { .fd = a, .events = open_ab ? POLLIN : 0 }, { .fd = b, .events = open_ba ? POLLIN : 0 } };

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		for (int i = 0; i < 2; i++) {
			int from = i ? b : a, to = i ? a : b;
			int *open = i ? &open_ba : &open_ab;

			if (!*open || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t r = read(from, buf, sizeof(buf));
			if (r <= 0) {
				shutdown(to, SHUT_WR);
				*open = 0;
				continue;
			}
			for (ssize_t off = 0; off < r;) {
				ssize_t w = write(to, buf + off, r - off);
				if (w <= 0)
					return;
				off += w;
			}
		}
	}
}

static void serve(int c)
{
	struct sockaddr_in dst;
	socklen_t len = sizeof(dst);
	char addr[64];
	int one = 1, up;

	if (getsockopt(c, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0) {
		report("{\"error\":\"SO_ORIGINAL_DST: %s\",\"errno\":%d}\n", strerror(errno), errno);
		exit(1);
	}
	snprintf(addr, sizeof(addr), "%s:%u", inet_ntoa(dst.sin_addr), ntohs(dst.sin_port));
	up = socket(AF_INET, SOCK_STREAM, 0);
	if (up < 0 || connect(up, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
		report("{\"odst\":\"%s\",\"ok\":false,\"errno\":%d}\n", addr, errno);
		exit(1);
	}
	report("{\"odst\":\"%s\",\"ok\":true,\"n\":%d}\n", addr, 0);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	relay(c, up);
	exit(0);
}

int main(int argc, char **argv)
{
	int port = 15001, uid = -1, opt, one = 1;

	while ((opt = getopt(argc, argv, "p:u:a:")) != -1) {
		if (opt == 'p') {
			port = atoi(optarg);
		} else if (opt == 'u') {
			uid = atoi(optarg);
		} else if (opt == 'a') { /* pin to one CPU, like pwperf -a */
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(atoi(optarg), &set);
			sched_setaffinity(0, sizeof(set), &set);
		} else {
			return 2;
		}
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 128)) {
		perror("pwproxy: listen");
		return 2;
	}
	if (uid >= 0 && (setgid(uid) || setuid(uid))) {
		perror("pwproxy: setuid");
		return 2;
	}
	signal(SIGCHLD, SIG_IGN);
	printf("{\"listening\":%d,\"uid\":%d}\n", port, (int)getuid());
	fflush(stdout);
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			perror("pwproxy: accept");
			return 2;
		}
		if (fork() == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL); /* goes with the proxy */
			close(fd);
			serve(c);
		}
		close(c);
	}
}
