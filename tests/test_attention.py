"Word attention (AttnGAN eq. 2): attngan_edu.attention against a loop-by-loop computation."
import math
import pytest
import torch
from attngan_edu.attention import word_context, padding_mask, WordAttention


def loop_word_context(h, e_prime, cap_lens):
    "Eq. 2 with Python loops over sample b, region j and word i; only the first cap_lens[b] words are words."
    B, Dh, N = h.shape
    T = e_prime.shape[2]
    c = torch.zeros(B, Dh, N, dtype=torch.float64)
    beta = torch.zeros(B, N, T, dtype=torch.float64)
    for b in range(B):
        L = int(cap_lens[b])
        for j in range(N):
            s = [sum(float(h[b, d, j]) * float(e_prime[b, d, i]) for d in range(Dh)) for i in range(L)]
            m = max(s)
            w = [math.exp(x - m) for x in s]
            z = sum(w)
            for i in range(L):
                beta[b, j, i] = w[i] / z
                for d in range(Dh):
                    c[b, d, j] += w[i] / z * float(e_prime[b, d, i])
    return c, beta


@pytest.mark.parametrize("B,Dh,N,T,lens", [
    (1, 2, 3, 4, None),           # the hand-sized shape, no padding
    (3, 5, 7, 6, None),
    (4, 3, 9, 6, [6, 4, 1, 2]),   # mixed lengths, unsorted
    (2, 4, 16, 8, [5, 3]),        # T larger than every caption
])
def test_word_context_matches_loop(B, Dh, N, T, lens):
    g = torch.Generator().manual_seed(B * 100 + N)
    h = torch.randn(B, Dh, N, generator=g, dtype=torch.float64)
    e = torch.randn(B, Dh, T, generator=g, dtype=torch.float64)
    cap_lens = torch.tensor(lens) if lens is not None else torch.full((B,), T)
    mask = padding_mask(cap_lens, T) if lens is not None else None
    c, beta = word_context(h, e, mask)
    c_ref, beta_ref = loop_word_context(h, e, cap_lens)
    assert c.shape == (B, Dh, N) and beta.shape == (B, N, T)
    torch.testing.assert_close(beta, beta_ref, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(c, c_ref, atol=1e-10, rtol=1e-9)


def test_hand_example():
    # regions (1,0), (0,1), (0,0); words (0,0), (2,0), (0,2), (1,1)
    h = torch.tensor([[1., 0.], [0., 1.], [0., 0.]]).T[None]
    e = torch.tensor([[0., 0.], [2., 0.], [0., 2.], [1., 1.]]).T[None]
    c, beta = word_context(h, e)
    z = 2 + math.e ** 2 + math.e
    torch.testing.assert_close(beta[0, 0], torch.tensor([1 / z, math.e ** 2 / z, 1 / z, math.e / z]))
    torch.testing.assert_close(beta[0, 2], torch.full((4,), 0.25))
    torch.testing.assert_close(c[0, :, 0], torch.tensor([(2 * math.e ** 2 + math.e) / z, (2 + math.e) / z]))


def test_masked_words_get_exactly_zero_weight():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 4, 10, generator=g) * 20          # large scores: padding would win without the mask
    e = torch.randn(3, 4, 6, generator=g) * 20
    lens = torch.tensor([6, 2, 1])
    c, beta = word_context(h, e, padding_mask(lens, 6))
    for b, L in enumerate(lens.tolist()):
        assert (beta[b, :, L:] == 0).all()                 # exactly zero, not small
        assert (beta[b, :, :L] >= 0).all()
    torch.testing.assert_close(beta.sum(-1), torch.ones(3, 10))
    # a one-word caption puts all weight on its word
    assert (beta[2, :, 0] == 1).all()
    torch.testing.assert_close(c[2], e[2, :, :1].expand(-1, 10))


def test_mask_is_per_sample():
    "Every region of sample b uses mask_b (the reference's mask.repeat(N, 1) mixes samples up)."
    B, N, T = 2, 3, 4
    h, e = torch.randn(B, 5, N), torch.randn(B, 5, T)
    mask = padding_mask(torch.tensor([4, 2]), T)
    _, beta = word_context(h, e, mask)
    assert (beta[0] > 0).all()                             # sample 0 has 4 real words: all get weight
    assert (beta[1, :, 2:] == 0).all() and (beta[1, :, :2] > 0).all()


def test_masked_gradients_are_finite_and_zero_on_padding():
    h = torch.randn(2, 3, 5, requires_grad=True)
    e = torch.randn(2, 3, 4, requires_grad=True)
    c, beta = word_context(h, e, padding_mask(torch.tensor([4, 2]), 4))
    (c.square().sum() + beta.square().sum()).backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(e.grad).all()
    assert (e.grad[1, :, 2:] == 0).all()                   # padding features cannot influence anything
    assert (e.grad[1, :, :2] != 0).any()


def test_bad_arguments():
    h, e = torch.randn(2, 3, 5), torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match='every word'):
        word_context(h, e, torch.tensor([[False] * 4, [True] * 4]))
    with pytest.raises(ValueError, match='mask'):
        word_context(h, e, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match='mask'):
        word_context(h, e, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match='e_prime'):
        word_context(h, torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match='h must be'):
        word_context(torch.randn(2, 3), e)
    with pytest.raises(ValueError, match='cap_lens'):
        padding_mask(torch.tensor([[1, 2]]), 3)


def test_padding_mask():
    m = padding_mask(torch.tensor([3, 1, 0]), 3)
    assert m.dtype == torch.bool
    assert m.tolist() == [[False, False, False], [False, True, True], [True, True, True]]


@pytest.mark.parametrize("shape", [(2, 4, 15), (2, 4, 3, 5)])
def test_word_attention_module(shape):
    torch.manual_seed(0)
    attn = WordAttention(D=6, D_hat=4)
    h, words_emb = torch.randn(*shape), torch.randn(2, 6, 7)
    mask = padding_mask(torch.tensor([7, 3]), 7)
    c, beta = attn(h, words_emb, mask)
    assert c.shape == h.shape and beta.shape == (2, 15, 7)
    e_prime = torch.einsum('kd,bdt->bkt', attn.U.weight[:, :, 0], words_emb)   # U e as a matrix product
    c_ref, beta_ref = word_context(h.flatten(2), e_prime, mask)
    torch.testing.assert_close(c.flatten(2), c_ref)
    torch.testing.assert_close(beta, beta_ref)
    # U is the only parameter and it gets a gradient
    assert [n for n, _ in attn.named_parameters()] == ['U.weight']
    c.sum().backward()
    assert attn.U.weight.grad.abs().sum() > 0


def test_word_attention_bad_shapes():
    attn = WordAttention(D=6, D_hat=4)
    with pytest.raises(ValueError, match='h must be'):
        attn(torch.randn(2, 5, 3, 3), torch.randn(2, 6, 7))
    with pytest.raises(ValueError, match='words_emb'):
        attn(torch.randn(2, 4, 3, 3), torch.randn(2, 5, 7))
