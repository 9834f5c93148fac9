// How much slower than a real machine this one is: PODWARP_TEST_SLOWDOWN, set
// by the kernel-matrix VMs (16 under TCG emulation). Budgets that wait for a
// process or an event are multiplied by it; nothing else changes.
export const SLOWDOWN = Math.max(1, Number(process.env.PODWARP_TEST_SLOWDOWN) || 1);

/** `ms` scaled by SLOWDOWN. */
export const scaled = (ms: number): number => ms * SLOWDOWN;
