"Tests for attngan_edu.ca and attngan_edu.encoders beyond the notebook's checks (larger cases, file handling)."
import json, math
import pytest
import torch
from torch.distributions import Normal, kl_divergence as td_kl

from attngan_edu.ca import CondAugment, kl_divergence
from attngan_edu.encoders import (TextEncoder, CNNImageEncoder, cosine_matrix, sentence_match_loss, retrieval_accuracy,
                                  save_sentence_encoder, load_sentence_encoder)
from attngan_edu.text import Vocab


def test_kl_matches_torch_distributions_and_is_nonnegative():
    g = torch.Generator().manual_seed(1)
    mu, logvar = 3 * torch.randn(64, 100, generator=g), 3 * torch.randn(64, 100, generator=g)
    ref = td_kl(Normal(mu, (0.5 * logvar).exp()), Normal(0., 1.)).sum(-1)
    torch.testing.assert_close(kl_divergence(mu, logvar), ref, rtol=1e-5, atol=1e-4)
    assert (kl_divergence(mu, logvar) >= 0).all()
    torch.testing.assert_close(kl_divergence(torch.zeros(3, 7), torch.zeros(3, 7)), torch.zeros(3))


def test_kl_gradients_point_to_standard_normal():
    mu = torch.tensor([[2., -1.]], dtype=torch.double, requires_grad=True)
    logvar = torch.tensor([[1., -1.]], dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(kl_divergence, (mu, logvar))
    kl_divergence(mu, logvar).sum().backward()
    torch.testing.assert_close(mu.grad, mu.detach())                                   # d/dmu = mu
    torch.testing.assert_close(logvar.grad, 0.5 * (logvar.detach().exp() - 1))         # zero only at sigma = 1


def test_kl_monte_carlo_large_dim():
    torch.manual_seed(0)
    mu, logvar = 0.5 * torch.randn(1, 128), 0.5 * torch.randn(1, 128)
    q = Normal(mu, (0.5 * logvar).exp())
    c = q.sample((100_000,))
    mc = (q.log_prob(c) - Normal(0., 1.).log_prob(c)).sum(-1).mean()
    assert abs(mc - kl_divergence(mu, logvar)[0]) < 0.02 * kl_divergence(mu, logvar)[0] + 0.1


def test_cond_augment_sample_statistics_and_shapes():
    torch.manual_seed(0)
    ca = CondAugment(embed_dim=12, cond_dim=5)
    phi = torch.randn(1, 12).expand(50_000, -1)
    c_hat, mu, logvar = ca(phi)
    assert c_hat.shape == mu.shape == logvar.shape == (50_000, 5)
    torch.testing.assert_close(c_hat.mean(0), mu[0], atol=0.03, rtol=0)
    torch.testing.assert_close(c_hat.var(0), logvar[0].exp(), atol=0.05, rtol=0.05)
    # gradients reach the FC layer through both mu and sigma
    ca.zero_grad(); ca(torch.randn(4, 12))[0].pow(2).sum().backward()
    assert ca.fc.weight.grad[:5].abs().sum() > 0 and ca.fc.weight.grad[5:].abs().sum() > 0
    with pytest.raises(ValueError, match=r'\(B, 12\)'): ca(torch.randn(4, 11))


def test_text_encoder_padding_order_and_long_T():
    torch.manual_seed(0)
    enc = TextEncoder(30, emb_dim=10, D=8, dropout=0.5).eval()
    lens = torch.tensor([2, 7, 4, 1, 7])
    caps = torch.randint(2, 30, (5, 12)) * (torch.arange(12)[None] < lens[:, None])      # zero-padded, T=12 > max len
    with torch.no_grad():
        w, s = enc(caps, lens)
        assert w.shape == (5, 8, 12) and s.shape == (5, 8)
        assert (w * (torch.arange(12)[None, None] >= lens[:, None, None])).abs().sum() == 0
        w2, s2 = enc(caps[:, :7], lens)                                                  # T = max len
        torch.testing.assert_close(s, s2); torch.testing.assert_close(w[:, :, :7], w2)
        perm = torch.tensor([3, 0, 4, 2, 1])                                               # order does not matter
        torch.testing.assert_close(enc(caps[perm], lens[perm])[1], s[perm])
    with pytest.raises(ValueError, match='even'): TextEncoder(30, D=7)
    with pytest.raises(ValueError, match='cap_lens'): enc(caps, torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match='cap_lens'): enc(caps, lens[:4])


def test_dropout_only_in_train_mode():
    torch.manual_seed(0)
    enc = TextEncoder(30, emb_dim=10, D=8, dropout=0.5)
    caps, lens = torch.randint(1, 30, (3, 6)), torch.tensor([6, 6, 6])
    enc.train(); a, b = enc(caps, lens)[1], enc(caps, lens)[1]
    assert not torch.allclose(a, b)
    enc.eval(); torch.testing.assert_close(enc(caps, lens)[1], enc(caps, lens)[1])


def test_sentence_loss_learns_to_match():
    "A few Adam steps on free embeddings must drive the loss down and retrieval to 100%."
    torch.manual_seed(0)
    v = torch.randn(16, 8, requires_grad=True); e = torch.randn(16, 8, requires_grad=True)
    opt = torch.optim.Adam([v, e], lr=0.05)
    first = sum(sentence_match_loss(v, e)).item()
    for _ in range(200):
        opt.zero_grad(); sum(sentence_match_loss(v, e)).backward(); opt.step()
    assert sum(sentence_match_loss(v, e)).item() < 0.2 * first
    assert retrieval_accuracy(v.detach(), e.detach()) == 1.0
    # scaling either embedding does not change cosine scores
    torch.testing.assert_close(cosine_matrix(3 * e, v), cosine_matrix(e, v))


def test_class_mask_removes_same_class_negatives():
    torch.manual_seed(0)
    v, e = torch.randn(4, 6), torch.randn(4, 6)
    cls = torch.tensor([0, 0, 1, 1])
    l1, l2 = sentence_match_loss(v, e, class_ids=cls)
    # by hand: caption 0 competes only with images of other classes (2, 3)
    s = 10 * cosine_matrix(e, v)
    ref0 = -(s[0, 0] - torch.logsumexp(s[0, [0, 2, 3]], 0))
    ref = torch.stack([-(s[i, i] - torch.logsumexp(s[i, [i] + [j for j in range(4) if cls[j] != cls[i]]], 0)) for i in range(4)])
    torch.testing.assert_close(ref[0], ref0)
    torch.testing.assert_close(l1, ref.mean())
    refT = torch.stack([-(s[i, i] - torch.logsumexp(s[[i] + [j for j in range(4) if cls[j] != cls[i]], i], 0)) for i in range(4)])
    torch.testing.assert_close(l2, refT.mean())


def test_cnn_image_encoder_sizes():
    enc = CNNImageEncoder(D=16, ndf=4)
    for S in (64, 128, 256):
        v, v_bar = enc(torch.rand(2, 3, S, S) * 2 - 1)
        assert v.shape == (2, 16, S // 16, S // 16) and v_bar.shape == (2, 16)
    with pytest.raises(ValueError, match='multiple of 16'): enc(torch.rand(2, 3, 70, 70))
    with pytest.raises(ValueError, match='multiple of 16'): enc(torch.rand(2, 1, 64, 64))


def _tiny(tmp_path):
    torch.manual_seed(0)
    vocab = Vocab.build([['a', 'red', 'bird'], ['a', 'blue', 'wing']])
    te, ie = TextEncoder(len(vocab), emb_dim=6, D=4).eval(), CNNImageEncoder(D=4, ndf=2).eval()
    return vocab, te, ie


def test_save_load_roundtrip_and_overwrite(tmp_path):
    vocab, te, ie = _tiny(tmp_path)
    p = save_sentence_encoder(tmp_path / 'enc', te, ie, vocab, meta={'steps': 3})
    te2, ie2, vocab2, cfg = load_sentence_encoder(p)
    caps, lens = torch.tensor([[2, 3, 4], [2, 5, 0]]), torch.tensor([3, 2])
    imgs = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(te2(caps, lens)[1], te(caps, lens)[1])
        torch.testing.assert_close(ie2(imgs)[1], ie(imgs)[1])
    assert vocab2.itos == vocab.itos and cfg['meta'] == {'steps': 3}
    # overwrite in place with different weights; no temporary folders left behind
    te.rnn.weight_hh_l0.data.add_(1.)
    save_sentence_encoder(tmp_path / 'enc', te, ie, vocab)
    with torch.no_grad(): torch.testing.assert_close(load_sentence_encoder(p)[0](caps, lens)[1], te(caps, lens)[1])
    assert sorted(x.name for x in tmp_path.iterdir()) == ['enc']


def test_load_errors_name_the_file(tmp_path):
    vocab, te, ie = _tiny(tmp_path)
    p = save_sentence_encoder(tmp_path / 'enc', te, ie, vocab)
    (p / 'image_encoder.safetensors').unlink()
    with pytest.raises(FileNotFoundError, match='image_encoder.safetensors'): load_sentence_encoder(p)
    p = save_sentence_encoder(tmp_path / 'enc2', te, ie, vocab)
    cfg = json.loads((p / 'config.json').read_text()); cfg['text']['D'] = 6
    (p / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match='text_encoder.safetensors'): load_sentence_encoder(p)
    (p / 'config.json').write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match='config.json'): load_sentence_encoder(p)
    (p / 'config.json').write_text('not json')
    with pytest.raises(ValueError, match='config.json'): load_sentence_encoder(p)
    with pytest.raises(ValueError, match='vocab'):
        save_sentence_encoder(tmp_path / 'enc3', TextEncoder(len(vocab) + 1, emb_dim=6, D=4), ie, vocab)


def test_safetensors_files_hold_only_tensors(tmp_path):
    "The weights are read without unpickling: a file that is not safetensors is rejected, not executed."
    vocab, te, ie = _tiny(tmp_path)
    p = save_sentence_encoder(tmp_path / 'enc', te, ie, vocab)
    torch.save({'x': torch.zeros(1)}, p / 'text_encoder.safetensors')     # a pickle in disguise
    with pytest.raises(Exception): load_sentence_encoder(p)
