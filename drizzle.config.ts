// drizzle-kit: `npx drizzle-kit generate` writes a migration for every change to schema/.
import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'sqlite',
  schema: './schema/index.ts',
  out: './schema/migrations',
});
