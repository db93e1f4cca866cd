CREATE TABLE `demand_records` (
	`mesh_id` text NOT NULL,
	`id` text NOT NULL,
	`pipeline` text NOT NULL,
	`record` text NOT NULL,
	`closed` integer NOT NULL,
	`created_at_ms` integer NOT NULL,
	`updated_at_ms` integer NOT NULL,
	PRIMARY KEY(`mesh_id`, `id`)
);
