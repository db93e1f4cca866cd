CREATE TABLE `core_state` (
	`id` integer PRIMARY KEY NOT NULL,
	`mesh_id` text NOT NULL,
	`state` text NOT NULL,
	`updated_at_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `view_history` (
	`mesh_id` text NOT NULL,
	`generation` integer NOT NULL,
	`epoch` integer NOT NULL,
	`view` text NOT NULL,
	`committed_at_ms` integer NOT NULL,
	PRIMARY KEY(`mesh_id`, `generation`, `epoch`)
);
