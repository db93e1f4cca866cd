// All tables of a node's database. drizzle-kit reads this file (drizzle.config.ts) to
// generate migrations into schema/migrations/; add a table by exporting it here.
export * from './node.ts';
export * from './mesh.ts';
export * from './ingress.ts';
export * from './demand.ts';
