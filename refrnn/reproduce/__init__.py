r"""``refrnn reproduce``: the seed paper's trade-off (Davis & Arel, Tables II and IV), trained with refrnn.

Character-level language models over 27 symbols (a-z and space), one GRU-family layer between a
one-hot (or embedded) input and a softmax, trained with hand-derived backprop through time run by
the compiled forward and backward paths (:mod:`refrnn.jit`; the NumPy reference cells on request); then each model's validation bits per character, its update-gate sparsity on
validation data and the measured inference speed-up of the sparse njit paths
(:mod:`refrnn.jit.ccgru`) over the dense computation of the same cell.

Modules (imported on use; this package imports nothing heavy)::

    data     the 27-symbol alphabet, TEXT8 loader, the offline default corpus (Python's own docs)
    model    the language model: embedding -> cell -> softmax, loss in bits, its gradient (compiled paths)
    train    Adam, truncated BPTT, checkpoints that resume bit for bit, progress bar
    speed    validation BPC, z-sparsity, timed dense vs sparse inference
    report   the paper-shaped tables, PNG plots, JSON
    threads  BLAS / Numba thread counts set after NumPy loaded (one thread: shared machines)
    cli      ``main(argv)``: the grid, presets --smoke / default / --paper
"""
