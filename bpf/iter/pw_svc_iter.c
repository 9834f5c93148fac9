// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* pw_svc read back in one read(): 12-byte struct pw_svc_key, 8-byte struct pw_svc. */
#include "pw_map_dump.h"

PW_MAP_DUMP_ITER(pw_svc_iter, 12, 8)
