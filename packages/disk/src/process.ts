/**
 * Whether a process with this pid exists on this machine (a lock or scratch directory named after it is
 * then still in use). A process of another user counts as running.
 */
export function isProcessRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
