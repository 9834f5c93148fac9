// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* pw_svc read back in one read(): struct pw_svc_key, then struct pw_svc, per entry. */
#include "pw_map_dump.h"

PW_MAP_DUMP_ITER(pw_svc_iter, struct pw_svc_key, struct pw_svc)
