// Package serve is `lorafit serve`: one base network in memory and any
// number of PEFT-format adapters, each with its own head, class names and
// preprocessing, chosen per request — over an HTTP API with a web page.
//
// Requests for different adapters share a batch. The frozen part of the
// network (stem, residual blocks, pooling) runs once for the whole batch;
// each sample gets its own adapter's LoRA deltas inside it, and its own fc
// and head after it:
//
//   - For every conv that some adapter of the batch adapts, the batch's
//     adapters' lora_A are concatenated along the rank axis (each padded
//     to a common rank R, their count to a power of two S), so one conv
//     h = conv(x, A_all) computes every adapter's low-rank input for every
//     sample, at a cost proportional to S·R — small next to the frozen
//     conv. A per-sample 0/1 mask keeps only the sample's own adapter's
//     slice of h, and h·B_all (the adapters' lora_B stacked, scaled, and
//     for a grouped conv expanded to zeros outside each group) is the
//     sample's own delta: what Punica's SGMV gathers for LLMs, without a
//     sub-batch per adapter. Every other slot contributes exact zeros, so
//     each sample gets exactly scaling·B(A(x)) of its adapter.
//   - The pooled features are then split by adapter, and each adapter's
//     tail — fc (the base's, its own copy or its replacement, with its fc
//     LoRA) and its head — runs on its own rows. The tail is ~4% of the
//     work.
//   - An adapter that saves a module inside the network (modules_to_save
//     with a conv or a batch norm, e.g. layer4) cannot share that part:
//     its samples run as a sub-batch of their own through the whole
//     network, exactly as classifier.Predictor would run them.
//
// Graphs take the base's tensors as parameters, so compiling one per
// batch size and adapter mix never copies the base. Adapters are loaded
// on first use into an LRU bounded by count and bytes; a reload swaps in
// the new version while requests that started with the old one finish
// with it.
package serve
