"""A preallocated AQUA KV cache around the fused Triton decode kernels.

:class:`AquaKVCache` holds, per layer and KV head, the keys rotated by the layer's projection P
and stored dim-major in pages of T tokens ([layers, B, H_kv, pages, m, T]: the m kept rows of a
block of tokens lie in one m*T region, and every row offset is a multiple of T, so the kernels'
loads are aligned whatever the context length), optionally only their first m < d rotated
coordinates (the KV-memory reduction), and the values token-major ([layers, B, H_kv, capacity,
d_v], capacity = pages * T). Storage is zero-initialised once; the length is kept on the host.

- ``append(k, v)`` rotates new keys [B, H_kv, t, d] by P and writes them with their values;
- ``attend(q, k_keep=...)`` rotates q by P and runs AQUA over the cached tokens;
- ``decode_step(q, k, v, k_keep=...)`` is one decode step: rotate q, rotate and append the new
  key and value, attend over the cache including them. On CUDA with Triton it is three launches
  (``STEP_KERNELS``: the prologue rotates q and the key, writes the key and value and selects;
  then the split-N pass and the combine of :mod:`aqua_model.kernels.triton_decode`).

The length lives on the host, so a CUDA graph of ``decode_step`` replays the step at the
length it was captured at (rewriting the same position): capture one graph per length, or use
eager calls, whose host overhead the launch cache keeps small. Without Triton / CUDA every method
runs the eager torch reference on the same storage.
"""

from __future__ import annotations

import math

import torch

from aqua_model._checks import check_choice, check_int
from aqua_model.kernels import reference as ref, triton_decode as td

#: Tokens per page of the key storage: 128 lets the split kernel use blocks of 128 tokens for row
#: tiles of <= 64 rows (the faster rule there; ``triton_decode.choose_config``) and 64 for more.
DEFAULT_PAGE_TOKENS = 128
#: CUDA kernels of one Triton decode step, in launch order (what the ``aqua-cache-step`` plan lists).
STEP_KERNELS = td.KERNELS


class AquaKVCache:
    """Preallocated cache of rotated dim-major keys and token-major values (see the module doc).

    batch, heads_kv, head_dim (d), capacity (tokens; rounded up to whole pages), projection P
    ([d, d], [H_kv, d, d] or [layers, H_kv, d, d]; None: keys and queries arrive rotated),
    key_dims m (<= d kept key coordinates; default d), value_dim (default d), layers,
    page_tokens T (a power of two >= 16), dtype and device of the storage.
    """

    def __init__(
        self,
        *,
        batch: int,
        heads_kv: int,
        head_dim: int,
        capacity: int,
        projection: torch.Tensor | None = None,
        key_dims: int | None = None,
        value_dim: int | None = None,
        layers: int = 1,
        page_tokens: int = DEFAULT_PAGE_TOKENS,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
    ) -> None:
        self.batch = check_int("batch", batch, minimum=1)
        self.heads_kv = check_int("heads_kv", heads_kv, minimum=1)
        self.head_dim = check_int("head_dim", head_dim, minimum=1)
        self.key_dims = check_int(
            "key_dims", head_dim if key_dims is None else key_dims, minimum=1, maximum=head_dim
        )
        self.value_dim = check_int("value_dim", head_dim if value_dim is None else value_dim, minimum=1)
        self.layers = check_int("layers", layers, minimum=1)
        self.page_tokens = check_int("page_tokens", page_tokens, minimum=16)
        if self.page_tokens & (self.page_tokens - 1):
            raise ValueError(f"page_tokens must be a power of two >= 16, got {page_tokens}")
        capacity = check_int("capacity", capacity, minimum=1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # "cuda" means the current device
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = dtype
        self.pages = math.ceil(capacity / self.page_tokens)
        self.capacity = self.pages * self.page_tokens
        td.check_slice_size(
            m=self.key_dims, capacity=self.capacity, value_dim=self.value_dim, value_rows=self.capacity
        )
        B, H, m, T = self.batch, self.heads_kv, self.key_dims, self.page_tokens
        self.keys = torch.zeros(self.layers, B, H, self.pages, m, T, dtype=dtype, device=self.device)
        self.values = torch.zeros(
            self.layers, B, H, self.capacity, self.value_dim, dtype=dtype, device=self.device
        )
        self.P = self._projection(projection)
        self.lengths = [0] * self.layers
        self._steps: dict[tuple, tuple[td.DecodeLauncher, tuple[int, int, int, int, int], float, tuple]] = {}

    def _projection(self, P: torch.Tensor | None) -> torch.Tensor | None:
        """P as contiguous fp32 [layers, H_kv, d, d] (checked orthogonal shape), or None."""
        if P is None:
            return None
        if not isinstance(P, torch.Tensor) or not P.is_floating_point():
            raise TypeError(f"projection must be None or a floating torch.Tensor, got {type(P).__name__}")
        d, H, L = self.head_dim, self.heads_kv, self.layers
        full = (L, H, d, d)
        if P.dim() not in (2, 3, 4) or tuple(P.shape) != full[4 - P.dim() :]:
            raise ValueError(
                f"projection must be [d, d], [H_kv, d, d] or [layers, H_kv, d, d] = [{L}, {H}, {d}, {d}], "
                f"got shape {tuple(P.shape)}"
            )
        return P.expand(full).to(device=self.device, dtype=torch.float32).contiguous()

    # ------------------------------------------------------------------ views

    def length(self, layer: int = 0) -> int:
        """Cached tokens of ``layer``."""
        return self.lengths[self._layer(layer)]

    def _layer(self, layer: int) -> int:
        return check_int("layer", layer, minimum=0, maximum=self.layers - 1)

    def key_pages(self, layer: int = 0) -> torch.Tensor:
        """The paged rotated keys of ``layer``: [B, H_kv, pages, m, T] (a view)."""
        return self.keys[self._layer(layer)]

    def keys_dim_major(self, layer: int = 0) -> torch.Tensor:
        """The cached rotated keys of ``layer`` as a contiguous dim-major copy [B, H_kv, m, N]."""
        return td._dense_keys(self.key_pages(layer), self.length(layer)).transpose(-1, -2).contiguous()

    def cached_values(self, layer: int = 0) -> torch.Tensor:
        """The cached values of ``layer``: [B, H_kv, N, d_v] (a view)."""
        return self.values[self._layer(layer), :, :, : self.length(layer)]

    def reset(self) -> None:
        """Forget every cached token (the storage is kept)."""
        self.lengths = [0] * self.layers

    # ------------------------------------------------------------------ checks

    def _kv(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k [B, H_kv, t, d] / [B, H_kv, d] and v likewise with d_v, as 4-D tensors."""
        for name, x, last in (("k", k, self.head_dim), ("v", v, self.value_dim)):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise TypeError(
                    f"{name} must be a floating torch.Tensor [B, H_kv, t, {last}], got {type(x).__name__}"
                )
        k4 = k.unsqueeze(2) if k.dim() == 3 else k
        v4 = v.unsqueeze(2) if v.dim() == 3 else v
        want = (self.batch, self.heads_kv)
        if k4.dim() != 4 or tuple(k4.shape[:2]) != want or k4.shape[3] != self.head_dim:
            raise ValueError(
                f"k must be [B={want[0]}, H_kv={want[1]}, t, d={self.head_dim}], got {tuple(k.shape)}"
            )
        if v4.dim() != 4 or tuple(v4.shape[:3]) != tuple(k4.shape[:3]) or v4.shape[3] != self.value_dim:
            raise ValueError(
                f"v must be [B, H_kv, t={k4.shape[2]}, d_v={self.value_dim}], got {tuple(v.shape)}"
            )
        return k4, v4

    def _query(self, q: torch.Tensor) -> tuple[torch.Tensor, bool]:
        q3, four = td._as_3d_query(q)
        if q3.shape[0] != self.batch or q3.shape[2] != self.head_dim or q3.shape[1] % self.heads_kv:
            raise ValueError(
                f"q must be [B={self.batch}, H_q (a multiple of H_kv={self.heads_kv}), d={self.head_dim}], "
                f"got {tuple(q.shape)}"
            )
        return q3, four

    def _room(self, layer: int, t: int) -> int:
        pos = self.lengths[layer]
        if pos + t > self.capacity:
            raise ValueError(
                f"the cache holds {self.capacity} tokens: cannot append {t} to {pos} (layer {layer})"
            )
        return pos

    # ------------------------------------------------------------------ torch paths

    def _write_torch(self, layer: int, pos: int, k4: torch.Tensor, v4: torch.Tensor) -> None:
        """Rotate k4 by P in fp32 and write k^ (first m coords) and v4 at positions pos.."""
        t = k4.shape[2]
        P = self.P[layer] if self.P is not None else None
        k_hat = k4.float() if P is None else ref.rotate(k4.float(), P)
        k_hat = k_hat[..., : self.key_dims].to(self.dtype)  # [B, H, t, m]
        n = torch.arange(pos, pos + t, device=self.device)
        pages, cols = n // self.page_tokens, n % self.page_tokens
        # advanced indices in dims 2 and 4 move to the front: the target is [t, B, H, m]
        self.keys[layer][:, :, pages, :, cols] = k_hat.permute(2, 0, 1, 3)
        self.values[layer, :, :, pos : pos + t] = v4.to(self.dtype)

    def _attend_torch(
        self, layer: int, q3: torch.Tensor, k_keep: int, selection: str, scale: float | None
    ) -> torch.Tensor:
        g = q3.shape[1] // self.heads_kv
        P = self.P[layer] if self.P is not None else None
        q_hat = q3 if P is None else ref.rotate(q3.unsqueeze(2).float(), P, g=g).squeeze(2).to(q3.dtype)
        N = self.lengths[layer]
        keys = td._dense_keys(self.keys[layer], N)
        return ref.aqua_attention_rotated(
            q_hat.unsqueeze(2),
            keys,
            self.values[layer, :, :, :N],
            k_keep=k_keep,
            selection=selection,
            causal=True,
            scale=scale,
        )[:, :, 0]

    # ------------------------------------------------------------------ public

    def append(self, k: torch.Tensor, v: torch.Tensor, *, layer: int = 0) -> None:
        """Rotate new keys k [B, H_kv, t, d] (or [B, H_kv, d]) by P and append them and their values."""
        layer = self._layer(layer)
        k4, v4 = self._kv(k, v)
        t = k4.shape[2]
        pos = self._room(layer, t)
        self._write_torch(layer, pos, k4, v4)
        self.lengths[layer] = pos + t

    def attend(
        self,
        q: torch.Tensor,
        *,
        k_keep: int,
        selection: str = "per-head",
        layer: int = 0,
        scale: float | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """AQUA of the decode query q [B, H_q, d] (or [B, H_q, 1, d]; rotated here by P) over the
        cached tokens of ``layer``; returns [B, H_q, d_v] (or [B, H_q, 1, d_v])."""
        layer = self._layer(layer)
        N = self.lengths[layer]
        if N == 0:
            raise ValueError("the cache is empty: append keys and values before attending")
        P = self.P[layer] if self.P is not None else None
        return td.aqua_decode(
            q,
            self.keys[layer],
            self.values[layer],
            P,
            k_keep=k_keep,
            selection=selection,
            scale=scale,
            out=out,
            length=N,
        )

    def decode_step(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        k_keep: int,
        selection: str = "per-head",
        layer: int = 0,
        scale: float | None = None,
        out: torch.Tensor | None = None,
        position: int | None = None,
    ) -> torch.Tensor:
        """One decode step of ``layer``: rotate q [B, H_q, d] and the new key k [B, H_kv, d] by P,
        append k^ and v [B, H_kv, d_v] at the next position, attend over the cache including them.
        ``position``: write the token there instead and keep position + 1 tokens (a step that can
        be repeated, e.g. replayed from a CUDA graph: capture ``decode_step(..., position=p)``).
        Returns [B, H_q, d_v] (or [B, H_q, 1, d_v] for a 4-D q)."""
        layer = check_int("layer", layer, minimum=0, maximum=self.layers - 1)
        q3, four = self._query(q)
        k4, v4 = self._kv(k, v)
        if k4.shape[2] != 1:
            raise ValueError(f"decode_step appends one token per sequence, got {k4.shape[2]}")
        if position is None:
            pos = self._room(layer, 1)
        else:
            pos = check_int(
                "position", position, minimum=0, maximum=min(self.lengths[layer], self.capacity - 1)
            )
        selection = check_choice("selection", selection, td.SELECTIONS)
        k_keep = check_int("k_keep", k_keep, minimum=1, maximum=self.key_dims)
        if not td.triton_available(q3.device) or q3.device != self.device:
            if q3.device != self.device:
                raise ValueError(f"q is on {q3.device}, the cache on {self.device}")
            self._write_torch(layer, pos, k4, v4)
            self.lengths[layer] = pos + 1
            o = self._attend_torch(layer, q3, k_keep, selection, scale)
            if out is not None:
                out.copy_(o.reshape(out.shape))
                o = out.view(o.shape)
            return o.unsqueeze(2) if four else o
        td.check_same_device(q3.device, k=k4, v=v4)  # the kernel reads them by address
        td.check_interpreter_dtype("the cache's dtype", self.dtype)
        o = self._step_triton(layer, pos, q3, k4[:, :, 0], v4[:, :, 0], k_keep, selection, scale, out)
        self.lengths[layer] = pos + 1
        return o.unsqueeze(2) if four else o

    def _step_triton(
        self,
        layer: int,
        pos: int,
        q3: torch.Tensor,
        k3: torch.Tensor,
        v3: torch.Tensor,
        k_keep: int,
        selection: str,
        scale: float | None,
        out: torch.Tensor | None,
    ) -> torch.Tensor:
        key = (
            q3.shape,
            q3.stride(),
            q3.dtype,
            k3.stride(),
            v3.stride(),
            k_keep,
            selection,
            scale,
            q3.data_ptr() % 16,
            k3.data_ptr() % 16,
            v3.data_ptr() % 16,
            None if out is None else (out.stride(), out.data_ptr() % 16),
        )
        hit = self._steps.get(key)
        B, hq = q3.shape[0], q3.shape[1]
        if out is None:
            o = torch.empty(B, hq, self.value_dim, dtype=q3.dtype, device=q3.device)
        else:
            o = td._check_out(out, B, hq, self.value_dim, q3.dtype, q3.device)
        if hit is None:
            hit = self._step_launcher(q3, k3, v3, o, k_keep, selection, scale)
            self._steps[key] = hit
        la, k_strides, s, static = hit
        la.run(
            q=q3,
            k=self.keys[layer],
            k_strides=k_strides,
            v=self.values[layer],
            N=pos + 1,
            scale=s,
            out=o,
            P=self.P[layer] if self.P is not None else None,
            k_new=k3,
            v_new=v3,
            pos=pos,
            static=static,
        )
        return o

    def _step_launcher(
        self,
        q3: torch.Tensor,
        k3: torch.Tensor,
        v3: torch.Tensor,
        o: torch.Tensor,
        k_keep: int,
        selection: str,
        scale: float | None,
    ) -> tuple[td.DecodeLauncher, tuple[int, int, int, int, int], float, tuple]:
        """The cached launcher of a decode step (the same for every layer: same shapes and strides)."""
        B, hq, d = q3.shape
        g = hq // self.heads_kv
        if q3.stride(-1) != 1 or k3.stride(-1) != 1 or v3.stride(-1) != 1:
            raise ValueError("q, k and v must be contiguous in their last dim")
        if any(t.data_ptr() % 16 for t in (q3, k3, v3)):
            raise ValueError("q, k and v must start at 16-byte aligned addresses")
        dv = self.value_dim
        if dv != td._next_pow2(dv) or dv < 16:
            raise ValueError(f"the Triton kernels need a value dim that is a power of two >= 16, got {dv}")
        _, k_strides, page = td.key_strides(self.keys[0])
        mode = td._SEL_GROUP if selection == "group" else td._SEL_HEAD
        rows = td.tile_rows(m=self.key_dims, k_keep=k_keep, group=g, mode=mode, shared=selection == "group")
        st = td._Static(
            B=B,
            hq=hq,
            hkv=self.heads_kv,
            d=d,
            m=self.key_dims,
            dv=dv,
            group=g,
            mode=mode,
            k_keep=k_keep,
            rotate=self.P is not None,
            append=True,
            given_per_head=False,
            page=page,
            q_dtype=q3.dtype,
            device=q3.device,
            config=td.choose_config(rows=rows, value_dim=dv, page=page),
            spec=td.launch_spec(q3, k3, v3, o, self.P, self.values, ints=k_strides),
        )
        la = td.get_launcher(st)
        static = la.static_args(
            q=q3,
            k_strides=k_strides,
            v=self.values[0],
            P=None if self.P is None else self.P[0],
            k_new=k3,
            v_new=v3,
        )
        return la, k_strides, ref._scale(scale, d), static


def decode_step(
    cache: AquaKVCache,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    k_keep: int,
    selection: str = "per-head",
    layer: int = 0,
    scale: float | None = None,
    out: torch.Tensor | None = None,
    position: int | None = None,
) -> torch.Tensor:
    """:meth:`AquaKVCache.decode_step` as a function (the implementation of ``aqua-cache-step``)."""
    return cache.decode_step(
        q, k, v, k_keep=k_keep, selection=selection, layer=layer, scale=scale, out=out, position=position
    )


def cache_holding(
    k_hat_t: torch.Tensor, v: torch.Tensor, P: torch.Tensor | None, *, page_tokens: int = DEFAULT_PAGE_TOKENS
) -> tuple[AquaKVCache, torch.Tensor, torch.Tensor]:
    """An AquaKVCache holding the rotated keys k_hat_t [B, H_kv, d, N] (dim-major) and the values
    v [B, H_kv, N, d_v], with the last token as it would be appended again: (cache, k_last
    [B, H_kv, d] unrotated, v_last [B, H_kv, d_v]). ``decode_step(cache, q, k_last, v_last,
    position=N - 1)`` then repeats the step of the last token: the same output as attending over
    the N tokens (up to the rounding of rotating k back and forth)."""
    B, H, d, N = k_hat_t.shape
    cache = AquaKVCache(
        batch=B,
        heads_kv=H,
        head_dim=d,
        capacity=N,
        projection=P,
        value_dim=v.shape[-1],
        page_tokens=page_tokens,
        dtype=v.dtype,
        device=v.device,
    )
    n = torch.arange(N, device=v.device)
    cache.keys[0][:, :, n // cache.page_tokens, :, n % cache.page_tokens] = k_hat_t.permute(3, 0, 1, 2).to(
        v.dtype
    )
    cache.values[0, :, :, :N] = v
    cache.lengths[0] = N
    k_last = k_hat_t[..., -1].float()
    if P is not None:  # k^ = k P with P orthogonal: k = k^ P^T
        assert cache.P is not None  # the cache was built with projection=P
        k_last = torch.matmul(k_last.unsqueeze(2), cache.P[0].transpose(-1, -2).unsqueeze(0)).squeeze(2)
    return cache, k_last.to(v.dtype).contiguous(), v[:, :, -1].contiguous()
