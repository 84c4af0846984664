/**
 * Marks a promise whose rejection is deliberately not acted on, and says why. It is the one place where a
 * rejection is dropped, so a reader can grep for every such decision and the reason is in the code, not lost
 * in an empty `.catch`. The returned promise resolves once `promise` settles, whichever way: await it to wait
 * for the work to end without caring how it ended.
 *
 * @param promise the promise whose failure, if any, is handled elsewhere or does not matter.
 * @param reason why dropping the rejection is safe (documentation for the reader; not logged).
 * @example
 * ```ts
 * ignoreRejection(download, 'a failed download is reported when its layer is opened');
 * await ignoreRejection(writing, 'the stream was destroyed on purpose; its error is the one already thrown');
 * ```
 */
export function ignoreRejection(promise: PromiseLike<unknown> | undefined, reason: string): Promise<void> {
  void reason;
  return Promise.resolve(promise).then(
    () => undefined,
    () => undefined,
  );
}
