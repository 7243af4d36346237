// Package bench measures voik against its references on the same machine
// in the same run: a core NATS subscriber that only counts (the ceiling
// of capture) and JetStream with file storage (the thing voik is an
// alternative to). For each message size it runs
//
//  1. ceiling: a burst of plain publishes to a counting subscriber in a
//     child process (this binary again, see RunChildIfAsked), as voik
//     is, and the same in the NATS server's process for reference; then
//     two children that speak voik's protocol from memory, storing
//     nothing: one acks every Voik-Ack message at once, the other serves
//     FETCH pages (the most any NATS client could reach in voik's place);
//  2. voik capture: the same burst, until INFO shows every message;
//  3. JetStream capture: the same burst into a file-storage stream;
//  4. voik acknowledged appends (Voik-Ack) with a window in flight;
//  5. JetStream acknowledged publishes, at the default sync interval and
//     with sync_interval: always; 1, 4 and 5 acknowledge twice, with a
//     window of 256 (where waiting for a sync shows in every round trip)
//     and of 4000 (nats.go's default limit of pending async publishes,
//     JetStream as it comes);
//  6. voik FETCH of the whole history (client.Client.ReadRange with
//     its default read-ahead), and single-record fetches;
//  7. JetStream reads of the same history, every way nats.go offers: the
//     jetstream package's pull and ordered consumers, the older
//     nats.JetStreamContext's js.PullSubscribe with a Fetch(1000) loop and
//     its ordered push consumer (js.Subscribe with OrderedConsumer); and
//     single-message gets. The report states voik's FETCH against the
//     fastest of the four, and gives its ratio to each;
//  8. voik REPLAY of the whole history;
//  9. voik's resources, read from /proc of its child process: peak and
//     anonymous RSS, CPU seconds per million messages;
//  10. capture under read flood (part "flood"): another voik captures the
//     same burst with nothing reading, then again while another
//     connection sends 3,000 FETCH requests a second, open loop, each for
//     a full page of a history subject (harness.ReadFlood); capture rate
//     and loss in each phase, what the flood got (replies, 503s), and
//     voik's peak anonymous RSS in each beside its reply budget;
//  11. replication groups (part "group", at 1 KiB or the nearest size;
//     group.go): a group of three voiks beside a three-server cluster
//     against a JetStream R3 stream on the same cluster: acked appends at
//     windows 256 and 4000 (voik batch vs JetStream's default, voik always
//     vs JetStream sync always), group capture vs a standalone voik,
//     replication lag at half the group's capture rate, and 20 kill -9 of
//     the leader under retrying acked load (time to the next ack).
//
// NATS servers and JetStream run inside the benchmark process; voik runs
// as a child (harness.StartVoikProcess), so its memory, CPU time and page
// faults are its own. Every scenario may be repeated (Options.Repeat); the
// report keeps each one's best rate and its worst loss, because a shared
// two-core machine is noisy and a lucky run must not hide a loss.
//
// Figures are collected in a Report, printed as a table (Report.Write) and
// as JSON. cmd/voikbench is the program; `make bench` runs it. With
// -inprocess -profile DIR it runs voik inside itself and writes a CPU
// profile per voik phase, which is how the causes in a report are found.
package bench
