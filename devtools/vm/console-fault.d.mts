// Types of console-fault.mjs (plain JS: scripts/kernel-matrix.sh runs it with node).
export interface ConsoleFault {
  kind: 'emulator' | 'panic' | 'none';
  line: string;
}
export function consoleFault(text: string): ConsoleFault;
