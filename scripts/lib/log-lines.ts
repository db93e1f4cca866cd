// Splits a child's output stream into lines and prints each with a prefix; JSON log lines are
// shortened to "LEVEL message {fields}" so several nodes' logs stay readable side by side.

const levelNames: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

export async function pipeLines(stream: ReadableStream<Uint8Array>, prefix: string, write: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      write(`${prefix} ${formatLine(pending.slice(0, newline))}`);
      pending = pending.slice(newline + 1);
      newline = pending.indexOf('\n');
    }
  }
  if (pending !== '') write(`${prefix} ${formatLine(pending)}`);
}

export function formatLine(line: string): string {
  if (!line.startsWith('{')) return line;
  try {
    const { level, time, msg, pid, hostname, ...rest } = JSON.parse(line) as Record<string, unknown>;
    void time;
    void pid;
    void hostname;
    const fields = Object.keys(rest).length === 0 ? '' : ` ${JSON.stringify(rest)}`;
    return `${levelNames[level as number] ?? String(level)} ${String(msg ?? '')}${fields}`;
  } catch {
    return line;
  }
}
