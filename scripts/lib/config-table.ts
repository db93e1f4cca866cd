// Prints the README's config reference table from the schema in node/config.ts:
// `bun scripts/lib/config-table.ts`, then paste it under "Configuration" in README.md.
import { configReferenceMarkdown } from '../../node/config.ts';

process.stdout.write(`${configReferenceMarkdown()}\n`);
