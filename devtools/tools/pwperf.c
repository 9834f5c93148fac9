// SPDX-License-Identifier: Apache-2.0
/*
 * pwperf — the traffic tool of podwarp's demo, tests and benchmarks.
 *
 *   pwperf server -p PORT                    serve until killed (fork per connection)
 *   any command: -a CPU pins the process to one CPU (both ends on one CPU
 *   take the VM's cross-CPU wakeup cost out of latency figures, as netperf -T)
 *   pwperf rr   -c IP -p PORT [-s SIZE] [-n N | -d SECS] [-w WARMUP] [-i PACE_US]
 *        request/response: SIZE bytes each way, every response checked against
 *        the request; prints latency percentiles (µs) as JSON
 *   pwperf sink -c IP -p PORT [-b BYTES | -d SECS] [-s CHUNK] [-v]
 *        bulk one way; with -v the payload is a seeded pseudo-random stream
 *        and both ends hash it: prints throughput and whether hashes match
 *   pwperf conn -c IP -p PORT [-n N | -d SECS]
 *        new connections one after another: connect, learn which backend
 *        answered, check getpeername() is the address dialled, close;
 *        prints the connection rate and the count per backend (services)
 *   pwperf udp -c IP -p PORT [-n N] [-C] [-R [-K]] [-S]
 *        UDP requests (unconnected sendto, or connected with -C): every
 *        reply must come from the address dialled; count per backend;
 *        -R: a new socket (a new flow) for every request;
 *        -K: each new socket follows another one that takes a socket
 *        cookie (SO_COOKIE) from the kernel-wide counter, as a client that
 *        alternates "look up, connect" gives every other cookie to its
 *        connect() (the socket LB takes one for each);
 *        -S: one socket, one request per line read on stdin (until EOF),
 *        one JSON line per request ({"i","backend","source_ok"} or
 *        {"i","error"}), then the summary: a long-lived socket the caller
 *        paces (the backend set can change between two requests)
 *   -6 (client commands): an AF_INET6 socket dialling the v4-mapped address
 *        ::ffff:IP (dual-stack applications: Java, .NET, Node udp6); reply
 *        sources and getpeername() are compared by their embedded IPv4
 *   (the server answers UDP on the same port too)
 *   pwperf stream -c IP -p PORT -d SECS [-i PACE_US [-P]] [-x STOPFILE]
 *        both directions at once for SECS, non-blocking I/O with poll() as
 *        proxies do, writes of varying size; every received byte is checked
 *        against its position in the peer's seeded stream, so a lost,
 *        duplicated or reordered byte is caught where it happens; -x: the
 *        client also stops sending (and drains, as at SECS) once STOPFILE
 *        exists, so a caller ends the stream when its steps are done;
 *        -P: the server paces its writes as the client does (-i), so that
 *        neither direction outruns the other's reader, which reads between
 *        its own paced writes (else the server writes unpaced)
 *
 * Exit status is non-zero on any I/O error, short read or data mismatch.
 * It is deliberately small C: a Node client would add tens of µs per round
 * trip and drown the difference being measured.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x50575046u /* "PWPF" */
enum { MODE_RR = 1, MODE_SINK = 2, MODE_STREAM = 3, MODE_ID = 4 };
enum { F_VERIFY = 1, F_PACED = 2 };

struct hdr {
	uint32_t magic, mode, size, flags;
};

/* -6: client sockets are AF_INET6 and dial ::ffff:IP */
static int g_v6;

/* A socket address of either family (AF_INET, or AF_INET6 for -6). */
union addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

static void die(const char *what)
{
	fprintf(stderr, "pwperf: %s: %s\n", what, strerror(errno));
	exit(2);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * EAGAIN on a blocking socket: the kernel's sockmap receive path
 * (tcp_bpf_recvmsg) returns it when a reader is woken with no data, e.g. by
 * the ACK of the socket's own FIN. Counted and reported ("eagain"), then
 * waited out with poll(), as an event-driven application would.
 */
static unsigned long g_eagain;

static int read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	errno = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			g_eagain++;
			poll(&p, 1, 1000);
			continue;
		}
		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
	size_t put = 0;
	while (put < n) {
		ssize_t r = write(fd, (const char *)buf + put, n - put);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		put += r;
	}
	return 0;
}

/* Position-addressed stream: word i = splitmix64(seed + i), so chunking never matters. */
static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Streaming hash over a byte stream, word at a time with a carry for partial words. */
struct hasher {
	uint64_t h, count;
	uint8_t carry[8];
	int ncarry;
};

static void hash_word(struct hasher *hs, uint64_t w)
{
	hs->h = (hs->h ^ w) * 0x100000001b3ull;
	hs->h ^= hs->h >> 29;
}

static void hash_update(struct hasher *hs, const uint8_t *p, size_t n)
{
	hs->count += n;
	while (n && hs->ncarry) {
		hs->carry[hs->ncarry++] = *p++;
		n--;
		if (hs->ncarry == 8) {
			uint64_t w;
			memcpy(&w, hs->carry, 8);
			hash_word(hs, w);
			hs->ncarry = 0;
		}
	}
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		hash_word(hs, w);
		p += 8;
		n -= 8;
	}
	while (n--)
		hs->carry[hs->ncarry++] = *p++;
}

static uint64_t hash_final(struct hasher *hs)
{
	uint64_t w = 0;
	if (hs->ncarry) {
		memcpy(&w, hs->carry, hs->ncarry);
		hash_word(hs, w ^ ((uint64_t)hs->ncarry << 56));
	}
	return hs->h ^ hs->count;
}

/* Byte at position `pos` of the stream seeded `seed`. */
static uint8_t stream_byte(uint64_t seed, uint64_t pos)
{
	uint64_t w = splitmix(seed + pos / 8);
	return (uint8_t)(w >> (8 * (pos % 8)));
}

static void fill_stream(uint8_t *buf, size_t n, uint64_t seed, uint64_t pos)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = stream_byte(seed, pos + i);
}

struct stream_stats {
	uint64_t sent, received;
	int error;
};

/*
 * Runs both directions on a non-blocking socket until `t_end` (client) or
 * the peer's EOF (server); then half-closes and drains the other direction.
 * Returns 0, or a non-zero code with a message on stderr at the first fault.
 */
/* -x: a file whose existence ends the client's sending (checked at most every 50 ms) */
static const char *g_stop_file;

static int stop_requested(void)
{
	static double next;
	if (!g_stop_file || now() < next)
		return 0;
	next = now() + 0.05;
	return access(g_stop_file, F_OK) == 0;
}

static int run_stream(int fd, uint64_t send_seed, uint64_t recv_seed, double t_end, long pace_us, struct stream_stats *st)
{
	static uint8_t out[65536], in[65536];
	uint64_t chunk_no = 0;
	int sending = 1, peer_open = 1;
	size_t out_len = 0, out_off = 0;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	while (sending || peer_open) {
		struct pollfd p = { .fd = fd, .events = POLLIN | (sending ? POLLOUT : 0) };

		if (sending && t_end && (now() >= t_end || stop_requested())) {
			shutdown(fd, SHUT_WR);
			sending = 0;
			continue;
		}
		if (poll(&p, 1, 200) < 0) {
			if (errno == EINTR)
				continue;
			perror("pwperf: poll");
			return 5;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = read(fd, in, sizeof(in));
			if (r < 0 && errno != EAGAIN && errno != EINTR) {
				fprintf(stderr, "pwperf stream: read after %llu bytes: %s\n", (unsigned long long)st->received, strerror(errno));
				return 5;
			}
			if (r == 0) {
				peer_open = 0;
				if (!t_end && sending) { /* server: the client is done, so are we */
					shutdown(fd, SHUT_WR);
					sending = 0;
				}
			}
			for (ssize_t i = 0; i < r; i++) {
				if (in[i] != stream_byte(recv_seed, st->received + i)) {
					fprintf(stderr, "pwperf stream: byte %llu is 0x%02x, expected 0x%02x\n",
						(unsigned long long)(st->received + i), in[i], stream_byte(recv_seed, st->received + i));
					return 6;
				}
			}
			if (r > 0)
				st->received += r;
		}
		if (sending && (p.revents & POLLOUT)) {
			if (out_off == out_len) {
				/* writes from 1 byte to 64 KiB, so messages split and merge everywhere */
				out_len = 1 + splitmix(chunk_no++ ^ send_seed) % sizeof(out);
				out_off = 0;
				fill_stream(out, out_len, send_seed, st->sent);
			}
			ssize_t w = write(fd, out + out_off, out_len - out_off);
			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				fprintf(stderr, "pwperf stream: write after %llu bytes: %s\n", (unsigned long long)st->sent, strerror(errno));
				return 5;
			}
			if (w > 0) {
				out_off += w;
				st->sent += w;
				if (out_off == out_len && pace_us)
					usleep(pace_us);
			}
		}
	}
	return 0;
}

#define SEED_C2S 0xc25ull
#define SEED_S2C 0x52cull

static void serve_conn(int fd, struct hdr h)
{
	uint32_t mode = ntohl(h.mode), size = ntohl(h.size), flags = ntohl(h.flags);
	if (mode == MODE_STREAM) {
		/* F_PACED: the client's pace (µs) is in `size`, and the server writes at it too */
		struct stream_stats st = {};
		int rc = run_stream(fd, SEED_S2C, SEED_C2S, 0, (flags & F_PACED) ? (long)size : 0, &st);
		/* one line per stream connection, for the caller to match with the client's */
		printf("{\"stream_received\":%llu,\"stream_sent\":%llu,\"ok\":%s}\n", (unsigned long long)st.received,
		       (unsigned long long)st.sent, rc ? "false" : "true");
		fflush(stdout);
		if (rc) { /* make the client see it: reset instead of a clean close */
			struct linger l = { 1, 0 };
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		}
		close(fd);
		exit(rc);
	}
	if (size == 0 || size > (64u << 20))
		exit(3);
	char *buf = malloc(size);
	if (!buf)
		exit(3);
	if (mode == MODE_RR) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		while (read_full(fd, buf, size) == 0)
			if (write_full(fd, buf, size))
				break;
	} else if (mode == MODE_SINK) {
		struct hasher hs = { .h = 0xcbf29ce484222325ull };
		for (;;) {
			ssize_t r = read(fd, buf, size);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				fprintf(stderr, "pwperf server: read after %llu bytes: %s\n", (unsigned long long)hs.count, strerror(errno));
				exit(4);
			}
			if (r == 0)
				break;
			if (flags & F_VERIFY)
				hash_update(&hs, (uint8_t *)buf, r);
			else
				hs.count += r;
		}
		uint64_t out[2] = { hs.count, (flags & F_VERIFY) ? hash_final(&hs) : 0 };
		if (write_full(fd, out, sizeof(out)))
			fprintf(stderr, "pwperf server: reply after %llu bytes: %s\n", (unsigned long long)hs.count, strerror(errno));
	}
	close(fd);
	exit(0);
}

static void __attribute__((noreturn)) server(int port)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
		die("bind");
	if (listen(fd, 128))
		die("listen");
	signal(SIGCHLD, SIG_IGN);
	int ufd = socket(AF_INET, SOCK_DGRAM, 0);
	if (ufd < 0 || bind(ufd, (struct sockaddr *)&a, sizeof(a)))
		die("udp bind");
	if (fork() == 0) { /* UDP: echo the request, prefixed with the address that answered */
		uint8_t buf[2048];
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* goes with the server */
		freopen("/dev/null", "w", stdout);
		for (;;) {
			struct sockaddr_in from;
			socklen_t fl = sizeof(from);
			ssize_t r = recvfrom(ufd, buf + 8, sizeof(buf) - 8, 0, (struct sockaddr *)&from, &fl);
			if (r < 0)
				continue;
			/* which local address was hit: connect a throwaway socket back and ask */
			int t = socket(AF_INET, SOCK_DGRAM, 0);
			struct sockaddr_in me = {};
			socklen_t ml = sizeof(me);
			connect(t, (struct sockaddr *)&from, sizeof(from));
			getsockname(t, (struct sockaddr *)&me, &ml);
			close(t);
			memset(buf, 0, 8);
			memcpy(buf, &me.sin_addr.s_addr, 4);
			memcpy(buf + 4, &a.sin_port, 2);
			sendto(ufd, buf, r + 8, 0, (struct sockaddr *)&from, fl);
		}
	}
	close(ufd);
	printf("{\"listening\":%d}\n", port);
	fflush(stdout);
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			die("accept");
		}
		/* the header is read here; identity requests are answered inline (no
		 * fork), so `conn` measures connection setup, not process creation */
		struct hdr h;
		struct timeval tv = { .tv_sec = 2 };
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (read_full(c, &h, sizeof(h)) || ntohl(h.magic) != MAGIC) {
			close(c);
			continue;
		}
		tv.tv_sec = 0;
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (ntohl(h.mode) == MODE_ID) {
			struct sockaddr_in me;
			socklen_t l = sizeof(me);
			uint8_t id[8] = {};
			getsockname(c, (struct sockaddr *)&me, &l);
			memcpy(id, &me.sin_addr.s_addr, 4);
			memcpy(id + 4, &me.sin_port, 2);
			write_full(c, id, sizeof(id));
			/* the client closes first, as HTTP clients do: TIME_WAIT stays on
			 * its side, and a reused client port never meets one here */
			tv.tv_sec = 2;
			setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			read(c, id, 1);
			close(c);
			continue;
		}
		if (fork() == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			close(fd);
			serve_conn(c, h);
		}
		close(c);
	}
}

/* The address a client dials: IP:PORT, or [::ffff:IP]:PORT with -6. */
static socklen_t addr_make(union addr *a, const char *ip, int port)
{
	struct in_addr v4;

	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, ip, &v4) != 1) {
		fprintf(stderr, "pwperf: bad address %s\n", ip);
		exit(2);
	}
	if (!g_v6) {
		a->in.sin_family = AF_INET;
		a->in.sin_port = htons(port);
		a->in.sin_addr = v4;
		return sizeof(a->in);
	}
	a->in6.sin6_family = AF_INET6;
	a->in6.sin6_port = htons(port);
	a->in6.sin6_addr.s6_addr[10] = 0xff;
	a->in6.sin6_addr.s6_addr[11] = 0xff;
	memcpy(&a->in6.sin6_addr.s6_addr[12], &v4, 4);
	return sizeof(a->in6);
}

/* Whether a (a reply's source, getpeername()) is want: same family, port and
 * IPv4 address (AF_INET6: v4-mapped, embedded address compared). */
static int addr_same(const union addr *a, const union addr *want)
{
	if (a->sa.sa_family != want->sa.sa_family)
		return 0;
	if (a->sa.sa_family == AF_INET)
		return a->in.sin_addr.s_addr == want->in.sin_addr.s_addr && a->in.sin_port == want->in.sin_port;
	return !memcmp(&a->in6.sin6_addr, &want->in6.sin6_addr, 16) && a->in6.sin6_port == want->in6.sin6_port;
}

/* A client socket of the family -6 chose (AF_INET6: dual-stack, IPV6_V6ONLY off). */
static int client_socket(int type)
{
	int fd = socket(g_v6 ? AF_INET6 : AF_INET, type, 0), off = 0;

	if (fd >= 0 && g_v6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	return fd;
}

/* getpeername() equals want. */
static int peer_is(int fd, const union addr *want)
{
	union addr peer;
	socklen_t pl = sizeof(peer);

	return !getpeername(fd, &peer.sa, &pl) && addr_same(&peer, want);
}

static int dial(const char *ip, int port, uint32_t mode, uint32_t size, uint32_t flags)
{
	union addr a;
	socklen_t al = addr_make(&a, ip, port);
	struct hdr h = { htonl(MAGIC), htonl(mode), htonl(size), htonl(flags) };
	int fd = client_socket(SOCK_STREAM), one = 1;
	if (fd < 0)
		die("socket");
	if (connect(fd, &a.sa, al))
		die("connect");
	if (mode == MODE_RR)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (write_full(fd, &h, sizeof(h)))
		die("write header");
	return fd;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int rr(const char *ip, int port, uint32_t size, long n, double secs, long warmup, long pace_us)
{
	int fd = dial(ip, port, MODE_RR, size, 0);
	char *out = malloc(size), *in = malloc(size);
	long cap = n > 0 ? n : 10000000, i, done = 0;
	double *lat = malloc(sizeof(double) * cap), t_end, start;
	if (!out || !in || !lat)
		die("malloc");
	for (i = 0; i < warmup; i++) {
		memset(out, (int)i, size);
		if (write_full(fd, out, size) || read_full(fd, in, size))
			die("warmup exchange");
	}
	start = now();
	t_end = secs > 0 ? start + secs : 0;
	for (i = 0; i < cap; i++) {
		if (t_end && now() >= t_end)
			break;
		uint64_t tag = splitmix(i);
		for (uint32_t o = 0; o + 8 <= size; o += 8)
			memcpy(out + o, &tag, 8);
		double t0 = now();
		if (write_full(fd, out, size) || read_full(fd, in, size)) {
			fprintf(stderr, "pwperf: exchange %ld failed: %s\n", i, strerror(errno));
			return 5;
		}
		lat[done++] = (now() - t0) * 1e6;
		if (memcmp(out, in, size)) {
			fprintf(stderr, "pwperf: response %ld differs from request\n", i);
			return 6;
		}
		if (pace_us)
			usleep(pace_us);
	}
	double elapsed = now() - start;
	close(fd);
	if (!done) {
		fprintf(stderr, "pwperf: no exchange completed\n");
		return 5;
	}
	double sum = 0;
	for (i = 0; i < done; i++)
		sum += lat[i];
	qsort(lat, done, sizeof(double), cmp_double);
#define PCT(p) lat[(long)((p) * (done - 1))]
	printf("{\"mode\":\"rr\",\"n\":%ld,\"size\":%u,\"seconds\":%.3f,\"p50_us\":%.2f,\"p90_us\":%.2f,"
	       "\"p99_us\":%.2f,\"mean_us\":%.2f,\"min_us\":%.2f,\"max_us\":%.2f,\"eagain\":%lu}\n",
	       done, size, elapsed, PCT(0.5), PCT(0.9), PCT(0.99), sum / done, lat[0], lat[done - 1], g_eagain);
	return 0;
}

static int sink(const char *ip, int port, uint64_t bytes, double secs, uint32_t chunk, int verify)
{
	if (chunk % 8) {
		fprintf(stderr, "pwperf: chunk must be a multiple of 8\n");
		return 2;
	}
	int fd = dial(ip, port, MODE_SINK, chunk, verify ? F_VERIFY : 0);
	uint64_t *buf = calloc(chunk / 8, 8), sent = 0, word = 0, reply[2];
	struct hasher hs = { .h = 0xcbf29ce484222325ull };
	double start = now(), t_end = secs > 0 ? start + secs : 0;
	if (!buf)
		die("calloc");
	for (;;) {
		uint64_t n = chunk;
		if (bytes) {
			if (sent >= bytes)
				break;
			if (bytes - sent < n)
				n = bytes - sent;
		} else if (now() >= t_end)
			break;
		if (verify) {
			for (uint32_t w = 0; w < chunk / 8; w++)
				buf[w] = splitmix(0x5eed + word + w);
			word += chunk / 8;
			hash_update(&hs, (uint8_t *)buf, n);
		}
		if (write_full(fd, buf, n)) {
			fprintf(stderr, "pwperf: send failed after %llu bytes: %s\n", (unsigned long long)sent, strerror(errno));
			return 5;
		}
		sent += n;
	}
	shutdown(fd, SHUT_WR);
	if (read_full(fd, reply, sizeof(reply))) {
		fprintf(stderr, "pwperf: no byte count from server: %s\n", errno ? strerror(errno) : "connection closed");
		return 5;
	}
	double elapsed = now() - start;
	uint64_t mine = verify ? hash_final(&hs) : 0;
	int ok = reply[0] == sent && reply[1] == mine;
	printf("{\"mode\":\"sink\",\"bytes\":%llu,\"received\":%llu,\"seconds\":%.4f,\"gbps\":%.3f,\"verify\":%s,"
	       "\"hash\":\"%016llx\",\"server_hash\":\"%016llx\",\"ok\":%s,\"eagain\":%lu}\n",
	       (unsigned long long)sent, (unsigned long long)reply[0], elapsed, sent * 8 / elapsed / 1e9,
	       verify ? "true" : "false", (unsigned long long)mine, (unsigned long long)reply[1], ok ? "true" : "false", g_eagain);
	return ok ? 0 : 6;
}

/* Per-backend counts for conn/udp. */
struct tally {
	char addr[64][24];
	long n[64];
	int used;
};

static void tally_add(struct tally *t, const uint8_t id[8])
{
	char a[24];
	struct in_addr in;
	uint16_t port;
	memcpy(&in.s_addr, id, 4);
	memcpy(&port, id + 4, 2);
	snprintf(a, sizeof(a), "%s:%u", inet_ntoa(in), ntohs(port));
	for (int i = 0; i < t->used; i++)
		if (!strcmp(t->addr[i], a)) {
			t->n[i]++;
			return;
		}
	if (t->used < 64) {
		strcpy(t->addr[t->used], a);
		t->n[t->used++] = 1;
	}
}

static void tally_print(const struct tally *t)
{
	printf("\"backends\":{");
	for (int i = 0; i < t->used; i++)
		printf("%s\"%s\":%ld", i ? "," : "", t->addr[i], t->n[i]);
	printf("}");
}

static int conn(const char *ip, int port, long n, double secs)
{
	union addr want;
	socklen_t wl = addr_make(&want, ip, port);
	struct tally t = {};
	long done = 0, errors = 0, peer_mismatch = 0, refused = 0, timeouts = 0;
	double start = now(), t_end = n ? 0 : start + secs;

	while (n ? done + errors < n : now() < t_end) {
		struct hdr h = { htonl(MAGIC), htonl(MODE_ID), htonl(1), 0 };
		uint8_t id[8];
		int fd = client_socket(SOCK_STREAM);
		struct timeval cto = { .tv_sec = 2 }; /* a lost SYN is an error, not a 2-minute stall */

		if (fd >= 0) {
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &cto, sizeof(cto));
			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &cto, sizeof(cto));
		}
		if (fd < 0 || connect(fd, &want.sa, wl) || write_full(fd, &h, sizeof(h)) ||
		    read_full(fd, id, sizeof(id))) {
			if (errors < 5)
				fprintf(stderr, "pwperf conn: connection %ld failed: %s\n", done + errors, strerror(errno));
			/* what the application sees: refused (RST or ICMP unreachable) or no answer at all */
			if (errno == ECONNREFUSED)
				refused++;
			else if (errno == EINPROGRESS || errno == EAGAIN || errno == ETIMEDOUT)
				timeouts++;
			errors++;
			if (fd >= 0)
				close(fd);
			continue;
		}
		if (!peer_is(fd, &want))
			peer_mismatch++;
		tally_add(&t, id);
		close(fd);
		done++;
	}
	double el = now() - start;
	printf("{\"mode\":\"conn\",\"connections\":%ld,\"errors\":%ld,\"refused\":%ld,\"timeouts\":%ld,\"peer_mismatch\":%ld,"
	       "\"seconds\":%.3f,\"per_second\":%.1f,",
	       done, errors, refused, timeouts, peer_mismatch, el, done / el);
	tally_print(&t);
	printf("}\n");
	return errors || peer_mismatch ? 7 : 0;
}

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

/* A socket that takes the next socket cookie, closed again (pwperf udp -K). */
static void take_cookie(void)
{
	uint64_t cookie;
	socklen_t len = sizeof(cookie);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len))
		die("SO_COOKIE");
	close(fd);
}

static int udp_socket(const union addr *want, socklen_t wl, int connected)
{
	int fd = client_socket(SOCK_DGRAM);
	struct timeval tv = { .tv_sec = 1 };

	if (fd < 0)
		die("udp socket");
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connected && connect(fd, &want->sa, wl))
		die("udp connect");
	return fd;
}

/* One request on fd: 1 answered (backend id in rep), 0 no or a bad reply (errno tells), source_ok set. */
static int udp_request(int fd, const union addr *want, socklen_t wl, int connected, long i, uint8_t rep[64], int *source_ok)
{
	uint8_t req[16];
	union addr from;
	socklen_t fl = sizeof(from);
	uint64_t tag = splitmix(i);

	memcpy(req, &tag, 8);
	memcpy(req + 8, &tag, 8);
	ssize_t w = connected ? send(fd, req, sizeof(req), 0) : sendto(fd, req, sizeof(req), 0, &want->sa, wl);
	ssize_t r = w < 0 ? -1 : recvfrom(fd, rep, 64, 0, &from.sa, &fl);
	if (r != (ssize_t)sizeof(req) + 8 || memcmp(rep + 8, req, sizeof(req))) {
		if (r >= 0)
			errno = EBADMSG;
		return 0;
	}
	*source_ok = addr_same(&from, want);
	return 1;
}

static int udp(const char *ip, int port, long n, int connected, int renew, int stepped, int cookies)
{
	union addr want;
	socklen_t wl = addr_make(&want, ip, port);
	struct tally t = {};
	long ok = 0, errors = 0, wrong_source = 0, refused = 0, timeouts = 0, peer_bad = 0;
	char line[64];
	int fd;

	if (cookies)
		take_cookie();
	fd = udp_socket(&want, wl, connected);
	for (long i = 0; stepped ? fgets(line, sizeof(line), stdin) != NULL : i < (n ? n : 100); i++) {
		uint8_t rep[64];
		int source_ok = 0;
		if (renew && i > 0) {
			close(fd);
			if (cookies)
				take_cookie();
			fd = udp_socket(&want, wl, connected);
		}
		if (!udp_request(fd, &want, wl, connected, i, rep, &source_ok)) {
			/* a connected socket learns of an ICMP port unreachable; an unconnected one only waits */
			const char *what = errno == ECONNREFUSED ? "refused" : errno == EAGAIN || errno == ETIMEDOUT ? "timeout" : "error";
			if (errno == ECONNREFUSED)
				refused++;
			else if (errno == EAGAIN || errno == ETIMEDOUT)
				timeouts++;
			errors++;
			if (stepped) {
				printf("{\"i\":%ld,\"error\":\"%s\"}\n", i, what);
				fflush(stdout);
			}
			continue;
		}
		if (!source_ok)
			wrong_source++;
		if (connected && renew && !peer_is(fd, &want)) /* every socket's getpeername(), not only the last one's */
			peer_bad++;
		if (stepped) {
			struct tally one = {};
			tally_add(&one, rep);
			printf("{\"i\":%ld,\"backend\":\"%s\",\"source_ok\":%s}\n", i, one.addr[0], source_ok ? "true" : "false");
			fflush(stdout);
		}
		tally_add(&t, rep);
		ok++;
	}
	int peer_ok = !peer_bad && (!connected || peer_is(fd, &want));
	printf("{\"mode\":\"udp\",\"connected\":%s,\"replies\":%ld,\"errors\":%ld,\"refused\":%ld,\"timeouts\":%ld,"
	       "\"wrong_source\":%ld,\"peer_ok\":%s,",
	       connected ? "true" : "false", ok, errors, refused, timeouts, wrong_source, peer_ok ? "true" : "false");
	tally_print(&t);
	printf("}\n");
	return errors || wrong_source || !peer_ok ? 7 : 0;
}

static int stream(const char *ip, int port, double secs, long pace_us, int pace_both)
{
	int fd = pace_both ? dial(ip, port, MODE_STREAM, (uint32_t)pace_us, F_PACED) : dial(ip, port, MODE_STREAM, 1, 0);
	struct stream_stats st = {};
	double start = now();
	int rc = run_stream(fd, SEED_C2S, SEED_S2C, start + secs, pace_us, &st);

	close(fd);
	printf("{\"mode\":\"stream\",\"seconds\":%.3f,\"sent\":%llu,\"received\":%llu,\"ok\":%s}\n", now() - start,
	       (unsigned long long)st.sent, (unsigned long long)st.received, rc == 0 && st.received > 0 ? "true" : "false");
	return rc ? rc : (st.received > 0 ? 0 : 6);
}

int main(int argc, char **argv)
{
	const char *ip = "127.0.0.1";
	int port = 5201, verify = 0, opt;
	uint32_t size = 0;
	long n = 0, warmup = 100, pace = 0;
	double secs = 0;
	unsigned long long bytes = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: pwperf server|rr|sink [options]\n");
		return 2;
	}
	const char *cmd = argv[1];
	optind = 2;
	int connected = 0, renew = 0, stepped = 0, pace_both = 0, cookies = 0;
	while ((opt = getopt(argc, argv, "c:p:s:n:d:w:i:b:va:x:CRKS6P")) != -1) {
		switch (opt) {
		case 'P': pace_both = 1; break;
		case 'x': g_stop_file = optarg; break;
		case '6': g_v6 = 1; break;
		case 'S': stepped = 1; break;
		case 'C': connected = 1; break;
		case 'R': renew = 1; break;
		case 'K': cookies = 1; break;
		case 'a': {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(atoi(optarg), &set);
			if (sched_setaffinity(0, sizeof(set), &set))
				die("sched_setaffinity");
			break;
		}
		case 'c': ip = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 's': size = strtoul(optarg, NULL, 10); break;
		case 'n': n = atol(optarg); break;
		case 'd': secs = atof(optarg); break;
		case 'w': warmup = atol(optarg); break;
		case 'i': pace = atol(optarg); break;
		case 'b': bytes = strtoull(optarg, NULL, 10); break;
		case 'v': verify = 1; break;
		default: return 2;
		}
	}
	if (!strcmp(cmd, "server"))
		server(port);
	if (!strcmp(cmd, "rr"))
		return rr(ip, port, size ? size : 64, n, n ? 0 : (secs ? secs : 2), warmup, pace);
	if (!strcmp(cmd, "conn"))
		return conn(ip, port, n, n ? 0 : (secs ? secs : 2));
	if (!strcmp(cmd, "udp"))
		return udp(ip, port, n, connected, renew, stepped, cookies);
	if (!strcmp(cmd, "stream"))
		return stream(ip, port, secs ? secs : 2, pace, pace_both);
	if (!strcmp(cmd, "sink"))
		return sink(ip, port, bytes, bytes ? 0 : (secs ? secs : 2), size ? size : 131072, verify);
	fprintf(stderr, "pwperf: unknown command %s\n", cmd);
	return 2;
}
