// Why a rank refused or failed a request: typed errors that the HTTP routes map to statuses.
// Each one means the request changed nothing on this node, except RankDeadlineError (the
// request stays queued and may still run; its answer is then dropped).

/** This node holds no active rank in its committed view (HTTP 409). */
export class NoRankError extends Error {
  override readonly name = 'NoRankError';
}

/** The node holds a rank but does not serve yet: warming up or building its first communicator (HTTP 503). */
export class RankNotReadyError extends Error {
  override readonly name = 'RankNotReadyError';
}

/** The request cannot run: bad tokens, empty, too long (HTTP 400). */
export class RankInputError extends Error {
  override readonly name = 'RankInputError';
}

/** The rank's queue is full (HTTP 429); try again after `retryAfterS`. */
export class RankBusyError extends Error {
  override readonly name = 'RankBusyError';
  constructor(
    message: string,
    readonly retryAfterS: number,
  ) {
    super(message);
  }
}

/** No result within the request deadline (HTTP 504). */
export class RankDeadlineError extends Error {
  override readonly name = 'RankDeadlineError';
}

/** The engine failed the request, or the node is stopping (HTTP 503). */
export class RankFailedError extends Error {
  override readonly name = 'RankFailedError';
}
