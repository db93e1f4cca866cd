CREATE TABLE `node_meta` (
	`id` integer PRIMARY KEY NOT NULL,
	`peer_id` text NOT NULL,
	`last_boot_id` text NOT NULL,
	`starts` integer NOT NULL,
	`first_started_at_ms` integer NOT NULL,
	`last_started_at_ms` integer NOT NULL
);
