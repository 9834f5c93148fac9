// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* pw_backends read back in one read(): struct pw_backend_key, then struct pw_backend, per entry. */
#include "pw_map_dump.h"

PW_MAP_DUMP_ITER(pw_backends_iter, struct pw_backend_key, struct pw_backend)
