/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A map dump as an iterator: one fixed-size record (key bytes, then value
 * bytes) per element, written to the seq_file. Reading the pin runs it, so
 * the agent reads 200,000 service entries back with one read() instead of
 * bpftool's JSON (seconds, and hundreds of MB of text at that size).
 * Key and value are the schema's structs (pw_types.h, generated from
 * abi/schema.ts). Standalone: bpftool iter cannot reuse pinned maps, so this
 * object declares none (the map is given at `bpftool iter pin … map …`).
 */
#include "pw_types.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct seq_file;
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__bpf_map_elem {
	struct bpf_iter_meta *meta;
	void *map;
	void *key;
	void *value;
} __attribute__((preserve_access_index));

#define PW_MAP_DUMP_ITER(fn, KEY_TYPE, VALUE_TYPE)                                                 \
	SEC("iter/bpf_map_elem")                                                                   \
	int fn(struct bpf_iter__bpf_map_elem *ctx)                                                 \
	{                                                                                          \
		struct {                                                                           \
			KEY_TYPE key;                                                              \
			VALUE_TYPE value;                                                          \
		} rec;                                                                             \
		__u8 *k = ctx->key, *v = ctx->value;                                               \
		if (!k || !v)                                                                      \
			return 0; /* the end of the walk */                                        \
		__builtin_memcpy(&rec.key, k, sizeof(rec.key));                                    \
		__builtin_memcpy(&rec.value, v, sizeof(rec.value));                                \
		bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));                                  \
		return 0;                                                                          \
	}                                                                                          \
	char LICENSE[] SEC("license") = "Dual BSD/GPL";
