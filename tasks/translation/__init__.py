"""Translation with an RNN encoder-decoder (Cho et al. 2014; Sutskever et al. 2014).

    rnnbench run --task translation-de-en --cell lstm_fused --cell gru_fused --cell rnn_fused
    rnnbench run --task translation-de-en-attention --cell gru_fused --bidirectional --task-option beam=10
    rnnbench run --task translation-tsv --task-option corpus=deu.txt --cell lstm_fused

The encoder and the decoder are two instances of the chosen cell (any registered cell); the
encoder may be bidirectional, its final state is bridged to the decoder's initial state. The
`-attention` variants add attention over the encoder outputs (the additive score v . tanh(W q +
U k) of Bahdanau et al. 2015, or `-o score=general` for Luong et al. 2015's q . W k), applied to the decoder's
outputs (the placement of Luong et al. 2015), so that teacher forcing runs the decoder over the
whole target in one call of the cell; they also copy from the source (`-o output=copy`, the
default: the output layer's distribution mixed with the attention on the source's tokens, See et
al. 2017's pointer-generator). Source and target share one BPE vocabulary (Hugging Face
`tokenizers`) trained on the training split and saved with the run; on the quick budget the output
layer's weights are the embedding's (`-o embeddings=tied|apart`). The Ding tasks can also
train on the dictionary's word and phrase entries (`-o entries=N`; `entries_to_add` says which).
Validation decodes greedily; the test decodes with beam search (width 5, or `--task-option
beam=K`; 1 decodes greedily). Metrics: corpus BLEU and chrF with SacreBLEU's standard settings
(signatures stored with the run), and token-level perplexity under teacher forcing.

Modules: `corpus` (parsing the dictionary or a TSV file, the split), `tokens` (the special tokens),
`data` (the data module: tokenizer, batches), `model` (the network), `decoding` (greedy and beam
search, the length exponent), `metrics` (BLEU, chrF, length ratio), `task` (options, budgets, the
four tasks, registered on import).
"""

from tasks.translation import task  # noqa: F401  registers the four tasks
