// Why the edge refused a request: typed errors that the HTTP routes map to statuses. Each
// one is thrown before anything is stored, so a refused request changed nothing.

/** Malformed input: bad tokens, bad idempotency key, bad mode (HTTP 400). */
export class IngressInputError extends Error {
  override readonly name = 'IngressInputError';
}

/** The input has more tokens than ingressInputTokensMax (HTTP 413). */
export class IngressTooLargeError extends Error {
  override readonly name = 'IngressTooLargeError';
}

/** The pipeline is not one this node is configured for (HTTP 404). */
export class UnknownPipelineError extends Error {
  override readonly name = 'UnknownPipelineError';
}

/** The idempotency key was used before with another pipeline or input (HTTP 409). */
export class IdempotencyConflictError extends Error {
  override readonly name = 'IdempotencyConflictError';
}

/** Every rank serving the pipeline has a full queue here (HTTP 429); try again after `retryAfterS`. */
export class IngressBusyError extends Error {
  override readonly name = 'IngressBusyError';
  constructor(
    message: string,
    readonly retryAfterS: number,
  ) {
    super(message);
  }
}

/**
 * The request cannot be held now (HTTP 503): the mesh is stopping or stopped, the node is
 * not started, or the queue of requests waiting for a rank is full. `retryAfterS` is null
 * when trying again will not help (the mesh stopped).
 */
export class IngressUnavailableError extends Error {
  override readonly name = 'IngressUnavailableError';
  constructor(
    message: string,
    readonly retryAfterS: number | null,
  ) {
    super(message);
  }
}
