// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * How many entries a map holds, in one read(): one byte per element, so the
 * read's length is the count. Pinned once per LRU map (pins iter/<map>_count)
 * for the agent's podwarp_map_entries gauge: the kernel walks the map
 * without a syscall per entry, where `bpftool map dump` would print a JSON
 * object for each. Never reads a key or value, so one object serves every
 * map, whatever its layout (pw_map_dump.h: standalone, no maps declared).
 */
#include "pw_map_dump.h"

SEC("iter/bpf_map_elem")
int pw_count_iter(struct bpf_iter__bpf_map_elem *ctx)
{
	char one = 1;

	if (!ctx->key)
		return 0; /* the end of the walk */
	bpf_seq_write(ctx->meta->seq, &one, sizeof(one));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
