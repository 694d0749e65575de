/* `cairn snapshot ...`: etcdctl's (3.4) / etcdutl's offline snapshot
 * commands on etcd's snapshot files.
 *
 *   cairn snapshot restore FILE [--data-dir DIR] [--name N]
 *         [--initial-cluster C] [--initial-cluster-token T]
 *         [--initial-advertise-peer-urls U] [--skip-hash-check]
 *   cairn snapshot status FILE [-w|--write-out simple|table|json|fields]
 *
 * Same flags, defaults, output and error texts as etcdctl; errors go to
 * stderr as "Error: ..." with exit code 1 (128 for bad arguments). */
#ifndef SNAP_CLI_H
#define SNAP_CLI_H

/* @argv[0] is "snapshot". Returns the process exit code. */
int snap_cli(int argc, char **argv);

#endif
