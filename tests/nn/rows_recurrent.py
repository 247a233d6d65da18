"""Catalogue rows for the recurrent layers, attention and the Transformer block."""
from fdl.nn.attention import MultiHeadSelfAttention, TransformerEncoderBlock
from fdl.nn.activations import Identity
from fdl.nn.combinators import parallel, serial
from fdl.nn.dense import Dense
from fdl.nn.pooling import GlobalAvgPool
from fdl.nn.recurrent import GRU, LSTM, SimpleRNN

ROWS = [
    ("simple_rnn", lambda: SimpleRNN(2), (4, 3)),
    ("lstm", lambda: LSTM(2), (4, 3)),
    ("lstm_bidirectional_sequences", lambda: LSTM(2, return_sequences=True, bidirectional=True), (4, 3)),
    ("gru_sequences", lambda: GRU(2, return_sequences=True), (4, 3)),
    ("gru_bidirectional", lambda: GRU(2, bidirectional=True), (4, 3)),
    # States: input (sequence, initial state), output (outputs, final state); see recurrent.py.
    ("simple_rnn_initial_state", lambda: SimpleRNN(2, initial_state=True), ((4, 3), (2,))),
    ("lstm_return_state", lambda: LSTM(2, return_state=True), (4, 3)),
    ("lstm_initial_and_final_state_sequences",
     lambda: LSTM(2, initial_state=True, return_state=True, return_sequences=True),
     ((4, 3), ((2,), (2,)))),
    ("lstm_bidirectional_initial_and_final_state",
     lambda: LSTM(2, bidirectional=True, initial_state=True, return_state=True),
     ((4, 3), (((2,), (2,)), ((2,), (2,))))),
    ("gru_bidirectional_initial_and_final_state_sequences",
     lambda: GRU(2, bidirectional=True, initial_state=True, return_state=True, return_sequences=True),
     ((4, 3), ((2,), (2,)))),
    ("gru_initial_state_from_the_sequence",  # a conditioned decoder: h0 = Dense(mean over time)
     lambda: serial(parallel(Identity(), serial(GlobalAvgPool(), Dense(2))),
                    GRU(2, initial_state=True, return_sequences=True)), (4, 3)),
    ("multi_head_self_attention", lambda: MultiHeadSelfAttention(2), (4, 4)),
    ("multi_head_self_attention_causal_head_dim",
     lambda: MultiHeadSelfAttention(2, head_dim=2, out_features=5, causal=True), (4, 3)),
    ("transformer_encoder_block", lambda: TransformerEncoderBlock(2, 6), (4, 4)),
    ("transformer_encoder_block_post_norm_causal",
     lambda: TransformerEncoderBlock(2, 6, causal=True, norm_first=False), (4, 4)),
]
