/* Exact shortcuts for pix2pixHD's two 7x7 stem convolutions over the one-hot + edge input; see stems.py.
 *
 * Both functions check what they are given and return 0, or STEMS_NOMEM (an allocation failed), STEMS_BADCODE (a code
 * below 0 or beyond the table) or STEMS_BADSIZE (a map too small for the reflection padding, or a bad table size);
 * on an error nothing is read out of bounds and `out` is left unspecified. stems.py checks the same before calling. */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { STEMS_OK = 0, STEMS_NOMEM = 1, STEMS_BADCODE = 2, STEMS_BADSIZE = 3 };

/* reflection padding 3 is valid for n >= 4 */
static inline int reflect(int i, int n) { if (i < 0) i = -i; if (i >= n) i = 2 * (n - 1) - i; return i; }

static int check_args(const int32_t *code, int H, int W, int ncodes, int O) {
    if (H < 7 || W < 7 || ncodes <= 0 || O <= 0) return STEMS_BADSIZE;  /* global stem: (H-1)/2+1 >= 4 */
    size_t n = (size_t)H * W;
    for (size_t i = 0; i < n; i++)
        if (code[i] < 0 || code[i] >= ncodes) return STEMS_BADCODE;
    return STEMS_OK;
}

/* row sums: rs[(dy * ncodes + c) * O + o] = sum over dx of table[(dy * 7 + dx) * ncodes + c][o], in double;
 * a 7-wide row of the window that holds one code adds rs once instead of 7 taps */
static float *row_sums(const float *table, int ncodes, int O) {
    float *rs = (float *)malloc(sizeof(float) * 7 * (size_t)ncodes * O);
    if (!rs) return NULL;
    for (int dy = 0; dy < 7; dy++)
        for (int c = 0; c < ncodes; c++)
            for (int o = 0; o < O; o++) {
                double sum = 0.0;
                for (int dx = 0; dx < 7; dx++) sum += table[((size_t)(dy * 7 + dx) * ncodes + c) * O + o];
                rs[((size_t)dy * ncodes + c) * O + o] = (float)sum;
            }
    return rs;
}

static inline __attribute__((always_inline)) void add_to(float *restrict a, const float *restrict t, int O) {
    for (int o = 0; o < O; o++) a[o] += t[o];
}

/* bias + the all-taps sum of each code: the output where the whole window holds that code */
static float *bias_sums(const float *wsum, const float *bias, int ncodes, int O) {
    float *bs = (float *)malloc(sizeof(float) * (size_t)ncodes * O);
    if (!bs) return NULL;
    for (int c = 0; c < ncodes; c++)
        for (int o = 0; o < O; o++) bs[(size_t)c * O + o] = bias[o] + wsum[(size_t)c * O + o];
    return bs;
}

/* Both stems work on a grid of n_rows x n positions (the map's pixels, or the global stem's pool cells), each with
 * codes[k]: its one code, or -1 where it holds several (a pool cell over a border).
 * row_windows: hrow[k] = the 7-wide row window centred at k (reflected) holds one code. */
static void row_windows(const int32_t *codes, int n_rows, int n, uint8_t *hrow) {
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < n_rows; y++) {
        const int32_t *row = codes + (size_t)y * n;
        for (int x = 0; x < n; x++) {
            int c = row[x], u = c >= 0;
            for (int d = -3; d <= 3 && u; d++) u = row[reflect(x + d, n)] == c;
            hrow[(size_t)y * n + x] = (uint8_t)u;
        }
    }
}

/* the sum over a window that holds several codes, for the position x of the window rows `rows`, into a[0..O); a
 * function of its own (not inlined) so that the compiler vectorizes over the O outputs, not across positions */
typedef void (*window_sum)(const void *ctx, const int *rows, int x, float *a);

/* Every output row into the planes out[o * n_rows * n + y * n + x]. A run of positions whose whole 7x7 window holds
 * their one code is filled plane by plane with bsum (a vector fill); a run of the others is summed position by
 * position into acc by `sum`, then stored plane by plane. STEMS_NOMEM when a thread's buffers cannot be had. */
static int stem_rows(const int32_t *codes, const uint8_t *hrow, int n_rows, int n, const float *bsum, int O,
                     float *out, window_sum sum, const void *ctx) {
    size_t plane = (size_t)n_rows * n;
    int nomem = 0;
    #pragma omp parallel
    {
        uint8_t *ok = (uint8_t *)malloc((size_t)n);
        float *acc = (float *)malloc(sizeof(float) * (size_t)n * O);
        if (!ok || !acc) {
            #pragma omp atomic write
            nomem = 1;
        }
        #pragma omp for schedule(static)
        for (int y = 0; y < n_rows; y++) {
            if (!ok || !acc) continue;
            int rows[7];
            for (int d = 0; d < 7; d++) rows[d] = reflect(y + d - 3, n_rows);
            const int32_t *own = codes + (size_t)y * n;
            float *row_out = out + (size_t)y * n;
            /* ok[x]: the whole window at x holds own[x], row by row over contiguous memory */
            for (int x = 0; x < n; x++) ok[x] = own[x] >= 0;
            for (int d = 0; d < 7; d++) {
                const int32_t *r = codes + (size_t)rows[d] * n;
                const uint8_t *h = hrow + (size_t)rows[d] * n;
                for (int x = 0; x < n; x++) ok[x] &= h[x] & (r[x] == own[x]);
            }
            int x = 0;
            while (x < n) {
                int c = own[x], e = x;
                while (e < n && ok[e] && own[e] == c) e++;
                if (e > x) {
                    for (int o = 0; o < O; o++) {
                        float v = bsum[(size_t)c * O + o], *dst = row_out + (size_t)o * plane;
                        for (int t = x; t < e; t++) dst[t] = v;
                    }
                    x = e;
                    continue;
                }
                while (e < n && !ok[e]) e++;
                for (int t = x; t < e; t++) sum(ctx, rows, t, acc + (size_t)(t - x) * O);
                for (int o = 0; o < O; o++) {
                    float *dst = row_out + (size_t)o * plane;
                    for (int t = x; t < e; t++) dst[t] = acc[(size_t)(t - x) * O + o];
                }
                x = e;
            }
        }
        free(ok); free(acc);
    }
    return nomem ? STEMS_NOMEM : STEMS_OK;
}

struct local_sums { const int32_t *code; const uint8_t *hu; int W; const float *table, *rs, *bias; int ncodes, O; };

/* the local stem over a window of several codes: a window row that holds one code adds its row sum, another adds
 * its 7 taps */
static inline __attribute__((always_inline)) void local_pixel(const struct local_sums *s, const int *rows, int x,
                                                              int O, float *restrict a) {
    for (int o = 0; o < O; o++) a[o] = s->bias[o];
    for (int dy = 0; dy < 7; dy++) {
        const int32_t *r = s->code + (size_t)rows[dy] * s->W;
        if (s->hu[(size_t)rows[dy] * s->W + x]) {
            add_to(a, s->rs + ((size_t)dy * s->ncodes + r[x]) * O, O);
            continue;
        }
        for (int dx = 0; dx < 7; dx++)
            add_to(a, s->table + ((size_t)(dy * 7 + dx) * s->ncodes + r[reflect(x + dx - 3, s->W)]) * O, O);
    }
}

/* label2city_1024p's local stem has 32 outputs: its accumulators stay in vector registers */
static __attribute__((noinline)) void local_pixel_32(const void *s, const int *rows, int x, float *a) {
    local_pixel((const struct local_sums *)s, rows, x, 32, a);
}

static __attribute__((noinline)) void local_pixel_any(const void *s, const int *rows, int x, float *a) {
    local_pixel((const struct local_sums *)s, rows, x, ((const struct local_sums *)s)->O, a);
}

/* The bytes of scratch memory a stem of an H x W map needs (its work argument). A caller that keeps this
   memory for the next map of the same size spares the allocator: freed between maps, the scratch (about 40 MB
   for the global stem at 2048x1024) can be taken over by other allocations, and the next map then touches fresh
   pages. A NULL work argument allocates it for the call. */
size_t local_stem_work(int H, int W) { return (size_t)H * W; }

size_t global_stem_work(int H, int W) {
    size_t cells = (size_t)((H - 1) / 2 + 1) * ((W - 1) / 2 + 1);
    return cells * (2 * 9 * sizeof(int32_t) + sizeof(int32_t) + 2);  /* cc, cw, sc, then cn and hc */
}

/* What both stems set up before their loops: the arguments checked, the threads set, the workspace (the caller's,
   or one allocated here), the tables' row sums and the bias sums. stem_end frees what stem_begin allocated. */
struct stem_scratch { uint8_t *own, *work; float *rs, *bs; };

static void stem_end(struct stem_scratch *s) { free(s->own); free(s->rs); free(s->bs); }

static int stem_begin(const int32_t *code, int H, int W, const float *table, const float *wsum, const float *bias,
                      int ncodes, int O, int threads, uint8_t *work, size_t (*work_bytes)(int, int),
                      struct stem_scratch *s) {
    int status = check_args(code, H, W, ncodes, O);
    if (status) return status;
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
#endif
    s->own = work ? NULL : (uint8_t *)malloc(work_bytes(H, W));
    s->work = work ? work : s->own;
    s->rs = row_sums(table, ncodes, O);
    s->bs = bias_sums(wsum, bias, ncodes, O);
    if (!s->work || !s->rs || !s->bs) { stem_end(s); return STEMS_NOMEM; }
    return 0;
}

/* local stem: out (O, H, W) = bias + sum over 7x7 taps of table[tap * ncodes + code] (reflect padding 3) */
int local_stem(const int32_t *code, int H, int W, const float *table, const float *wsum, const float *bias,
               int ncodes, int O, float *out, int threads, uint8_t *work) {
    struct stem_scratch s;
    int status = stem_begin(code, H, W, table, wsum, bias, ncodes, O, threads, work, local_stem_work, &s);
    if (status) return status;
    uint8_t *hu = s.work;
    row_windows(code, H, W, hu);
    struct local_sums sums = {code, hu, W, table, s.rs, bias, ncodes, O};
    status = stem_rows(code, hu, H, W, s.bs, O, out, O == 32 ? local_pixel_32 : local_pixel_any, &sums);
    stem_end(&s);
    return status;
}

struct global_sums {
    const int32_t *cc; const float *cw; const uint8_t *cn; const int32_t *sc; const uint8_t *hc; int hw;
    const float *table, *rs, *bias; int ncodes, O;
};

/* the global stem over a window of several codes: as local_pixel, where a cell of several codes adds each one's
 * taps weighted by its share of the cell */
static inline __attribute__((always_inline)) void global_pixel(const struct global_sums *s, const int *rows, int j,
                                                               int O, float *restrict a) {
    for (int o = 0; o < O; o++) a[o] = s->bias[o];
    for (int dy = 0; dy < 7; dy++) {
        size_t kr = (size_t)rows[dy] * s->hw;
        if (s->hc[kr + j]) {
            add_to(a, s->rs + ((size_t)dy * s->ncodes + s->sc[kr + j]) * O, O);
            continue;
        }
        for (int dx = 0; dx < 7; dx++) {
            size_t k = kr + reflect(j + dx - 3, s->hw);
            const float *tap = s->table + (size_t)(dy * 7 + dx) * s->ncodes * O;
            for (int q = 0; q < s->cn[k]; q++) {
                const float *restrict t = tap + (size_t)s->cc[k * 9 + q] * O;
                float wq = s->cw[k * 9 + q];
                for (int o = 0; o < O; o++) a[o] += wq * t[o];
            }
        }
    }
}

/* label2city_1024p's global stem has 64 outputs */
static __attribute__((noinline)) void global_pixel_64(const void *s, const int *rows, int j, float *a) {
    global_pixel((const struct global_sums *)s, rows, j, 64, a);
}

static __attribute__((noinline)) void global_pixel_any(const void *s, const int *rows, int j, float *a) {
    global_pixel((const struct global_sums *)s, rows, j, ((const struct global_sums *)s)->O, a);
}

/* global stem: AvgPool2d(3, 2, 1, count_include_pad=False) then reflect pad 3 and a 7x7 conv, from codes */
int global_stem(const int32_t *code, int H, int W, const float *table, const float *wsum, const float *bias,
                int ncodes, int O, float *out, int threads, uint8_t *work) {
    struct stem_scratch s;
    int status = stem_begin(code, H, W, table, wsum, bias, ncodes, O, threads, work, global_stem_work, &s);
    if (status) return status;
    int hh = (H - 1) / 2 + 1, hw = (W - 1) / 2 + 1;
    size_t cells = (size_t)hh * hw;
    int32_t *cc = (int32_t *)s.work;                                 /* distinct codes of each pool cell */
    float *cw = (float *)(cc + cells * 9);                           /* their weights: multiplicity / count */
    int32_t *sc = (int32_t *)(cw + cells * 9);                       /* a cell's one code, or -1 */
    uint8_t *cn = (uint8_t *)(sc + cells), *hc = cn + cells;
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < hh; i++) {
        for (int j = 0; j < hw; j++) {
            size_t k = (size_t)i * hw + j;
            int n = 0, count = 0, codes[9], mult[9];
            for (int dy = -1; dy <= 1; dy++) {
                int y = 2 * i + dy;
                if (y < 0 || y >= H) continue;
                for (int dx = -1; dx <= 1; dx++) {
                    int x = 2 * j + dx;
                    if (x < 0 || x >= W) continue;
                    int c = code[(size_t)y * W + x], f = 0;
                    count++;
                    for (int q = 0; q < n; q++) if (codes[q] == c) { mult[q]++; f = 1; break; }
                    if (!f) { codes[n] = c; mult[n] = 1; n++; }
                }
            }
            cn[k] = (uint8_t)n;
            sc[k] = n == 1 ? codes[0] : -1;
            for (int q = 0; q < n; q++) { cc[k * 9 + q] = codes[q]; cw[k * 9 + q] = (float)mult[q] / (float)count; }
        }
    }
    row_windows(sc, hh, hw, hc);
    struct global_sums sums = {cc, cw, cn, sc, hc, hw, table, s.rs, bias, ncodes, O};
    status = stem_rows(sc, hc, hh, hw, s.bs, O, out, O == 64 ? global_pixel_64 : global_pixel_any, &sums);
    stem_end(&s);
    return status;
}
