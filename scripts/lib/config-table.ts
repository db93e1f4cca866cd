// The README's config reference table, generated from the schema in node/config.ts.
// `bun scripts/lib/config-table.ts` prints it; `--write` replaces the table in README.md
// (the block of table lines right under the "| setting |" header).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configReferenceMarkdown } from '../../node/config.ts';

const table = configReferenceMarkdown();
if (!process.argv.includes('--write')) {
  process.stdout.write(`${table}\n`);
} else {
  const path = join(import.meta.dir, '../../README.md');
  const lines = readFileSync(path, 'utf8').split('\n');
  const start = lines.findIndex((l) => l.startsWith('| setting |'));
  if (start < 0) throw new Error('README.md has no "| setting |" table to replace');
  let end = start;
  while (end < lines.length && lines[end]!.startsWith('|')) end++;
  lines.splice(start, end - start, ...table.split('\n'));
  writeFileSync(path, lines.join('\n'));
  process.stdout.write(`README.md: config table replaced (${end - start} → ${table.split('\n').length} lines)\n`);
}
