// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* pw_backends read back in one read(): 4-byte struct pw_backend_key, 8-byte struct pw_backend. */
#include "pw_map_dump.h"

PW_MAP_DUMP_ITER(pw_backends_iter, 4, 8)
