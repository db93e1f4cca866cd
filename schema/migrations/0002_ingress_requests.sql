CREATE TABLE `ingress_requests` (
	`id` text PRIMARY KEY NOT NULL,
	`idempotency_key` text,
	`pipeline` text NOT NULL,
	`input` text NOT NULL,
	`mode` text NOT NULL,
	`status` text NOT NULL,
	`output` text,
	`rank` integer,
	`epoch` integer,
	`error_code` text,
	`error_message` text,
	`attempts` integer NOT NULL,
	`accepted_at_ms` integer NOT NULL,
	`finished_at_ms` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `ingress_requests_idempotency_key_unique` ON `ingress_requests` (`idempotency_key`);--> statement-breakpoint
CREATE INDEX `ingress_requests_status` ON `ingress_requests` (`status`);--> statement-breakpoint
CREATE INDEX `ingress_requests_finished` ON `ingress_requests` (`finished_at_ms`);