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

/* one output pixel of the local stem whose window holds several codes, into a[0..O): a function of its own so
 * that the compiler vectorizes over the O outputs, not across pixels (with gathers) */
static inline __attribute__((always_inline)) void local_pixel(
        const int32_t *code, const uint8_t *hu, const int *rows, int W, int x, const float *table, const float *rs,
        const float *bias, int ncodes, int O, float *restrict a) {
    for (int o = 0; o < O; o++) a[o] = bias[o];
    for (int dy = 0; dy < 7; dy++) {
        const int32_t *r = code + (size_t)rows[dy] * W;
        if (hu[(size_t)rows[dy] * W + x]) {
            add_to(a, rs + ((size_t)dy * ncodes + r[x]) * O, O);
            continue;
        }
        for (int dx = 0; dx < 7; dx++)
            add_to(a, table + ((size_t)(dy * 7 + dx) * ncodes + r[reflect(x + dx - 3, W)]) * O, O);
    }
}

static __attribute__((noinline)) void local_pixel_32(
        const int32_t *code, const uint8_t *hu, const int *rows, int W, int x, const float *table, const float *rs,
        const float *bias, int ncodes, float *a) {
    local_pixel(code, hu, rows, W, x, table, rs, bias, ncodes, 32, a);
}

static __attribute__((noinline)) void local_pixel_any(
        const int32_t *code, const uint8_t *hu, const int *rows, int W, int x, const float *table, const float *rs,
        const float *bias, int ncodes, int O, float *a) {
    local_pixel(code, hu, rows, W, x, table, rs, bias, ncodes, O, a);
}

/* one output row of the local stem, into the planes out[o * plane + x]. A run of pixels whose windows all hold the
 * same one code is filled plane by plane (a vector fill); a run of the other pixels is summed pixel by pixel into
 * acc (O outputs each; a window row that holds one code adds its row sum) and then stored plane by plane. */
static inline __attribute__((always_inline)) void local_row(
        const int32_t *code, const uint8_t *hu, int H, int W, int y, const float *table, const float *rs,
        const float *bsum, const float *bias, int ncodes, int O, float *out, size_t plane, uint8_t *ok,
        float *acc) {
    int rows[7];
    for (int d = 0; d < 7; d++) rows[d] = reflect(y + d - 3, H);
    const int32_t *own = code + (size_t)y * W;
    /* ok[x]: the whole 7x7 window at x holds own[x], row by row over contiguous memory */
    for (int x = 0; x < W; x++) ok[x] = 1;
    for (int d = 0; d < 7; d++) {
        const int32_t *r = code + (size_t)rows[d] * W;
        const uint8_t *h = hu + (size_t)rows[d] * W;
        for (int x = 0; x < W; x++) ok[x] &= h[x] & (r[x] == own[x]);
    }
    int x = 0;
    while (x < W) {
        int c = own[x], e = x;
        while (e < W && ok[e] && own[e] == c) e++;
        if (e > x) {
            for (int o = 0; o < O; o++) {
                float v = bsum[(size_t)c * O + o], *dst = out + (size_t)o * plane;
                for (int t = x; t < e; t++) dst[t] = v;
            }
            x = e;
            continue;
        }
        while (e < W && !ok[e]) e++;  /* a run of windows that hold several codes: summed into acc, then stored */
        for (int t = x; t < e; t++) {
            float *a = acc + (size_t)(t - x) * O;
            if (O == 32) local_pixel_32(code, hu, rows, W, t, table, rs, bias, ncodes, a);
            else local_pixel_any(code, hu, rows, W, t, table, rs, bias, ncodes, O, a);
        }
        for (int o = 0; o < O; o++) {
            float *dst = out + (size_t)o * plane;
            for (int t = x; t < e; t++) dst[t] = acc[(size_t)(t - x) * O + o];
        }
        x = e;
    }
}

/* bias + the all-taps sum of each code: the output where the whole window holds that code */
static float *bias_sums(const float *wsum, const float *bias, int ncodes, int O) {
    float *bs = (float *)malloc(sizeof(float) * (size_t)ncodes * O);
    if (!bs) return NULL;
    for (int c = 0; c < ncodes; c++)
        for (int o = 0; o < O; o++) bs[(size_t)c * O + o] = bias[o] + wsum[(size_t)c * O + o];
    return bs;
}

/* local stem: out (O, H, W) = bias + sum over 7x7 taps of table[tap * ncodes + code] (reflect padding 3) */
int local_stem(const int32_t *code, int H, int W, const float *table, const float *wsum, const float *bias,
               int ncodes, int O, float *out, int threads) {
    int status = check_args(code, H, W, ncodes, O);
    if (status) return status;
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
#endif
    /* hu[y][x]: the 7-wide horizontal window centred at x (reflected) holds one code */
    uint8_t *hu = (uint8_t *)malloc((size_t)H * W);
    float *rs = row_sums(table, ncodes, O), *bs = bias_sums(wsum, bias, ncodes, O);
    if (!hu || !rs || !bs) { free(hu); free(rs); free(bs); return STEMS_NOMEM; }
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < H; y++) {
        const int32_t *row = code + (size_t)y * W;
        for (int x = 0; x < W; x++) {
            int c = row[x], u = 1;
            for (int d = -3; d <= 3 && u; d++) u = row[reflect(x + d, W)] == c;
            hu[(size_t)y * W + x] = (uint8_t)u;
        }
    }
    int nomem = 0;
    #pragma omp parallel
    {
        uint8_t *ok = (uint8_t *)malloc((size_t)W);
        float *acc = (float *)malloc(sizeof(float) * (size_t)W * O);
        if (!ok || !acc) {
            #pragma omp atomic write
            nomem = 1;
        }
        #pragma omp for schedule(static)
        for (int y = 0; y < H; y++) {
            if (!ok || !acc) continue;
            float *row_out = out + (size_t)y * W;
            switch (O) {  /* label2city_1024p's local stem has 32 outputs */
            case 32: local_row(code, hu, H, W, y, table, rs, bs, bias, ncodes, 32, row_out, (size_t)H * W, ok, acc);
                     break;
            default: local_row(code, hu, H, W, y, table, rs, bs, bias, ncodes, O, row_out, (size_t)H * W, ok, acc);
            }
        }
        free(ok); free(acc);
    }
    free(hu); free(rs); free(bs);
    return nomem ? STEMS_NOMEM : STEMS_OK;
}

/* one output cell of the global stem whose window holds several codes, into a[0..O) (as local_pixel) */
static inline __attribute__((always_inline)) void global_pixel(
        const int32_t *cc, const float *cw, const uint8_t *cn, const int32_t *sc, const uint8_t *hc, const int *rows,
        int hw, int j, const float *table, const float *rs, const float *bias, int ncodes, int O, float *restrict a) {
    for (int o = 0; o < O; o++) a[o] = bias[o];
    for (int dy = 0; dy < 7; dy++) {
        size_t kr = (size_t)rows[dy] * hw;
        if (hc[kr + j]) {
            add_to(a, rs + ((size_t)dy * ncodes + sc[kr + j]) * O, O);
            continue;
        }
        for (int dx = 0; dx < 7; dx++) {
            size_t k = kr + reflect(j + dx - 3, hw);
            const float *tap = table + (size_t)(dy * 7 + dx) * ncodes * O;
            for (int q = 0; q < cn[k]; q++) {
                const float *restrict t = tap + (size_t)cc[k * 9 + q] * O;
                float wq = cw[k * 9 + q];
                for (int o = 0; o < O; o++) a[o] += wq * t[o];
            }
        }
    }
}

static __attribute__((noinline)) void global_pixel_64(
        const int32_t *cc, const float *cw, const uint8_t *cn, const int32_t *sc, const uint8_t *hc, const int *rows,
        int hw, int j, const float *table, const float *rs, const float *bias, int ncodes, float *a) {
    global_pixel(cc, cw, cn, sc, hc, rows, hw, j, table, rs, bias, ncodes, 64, a);
}

static __attribute__((noinline)) void global_pixel_any(
        const int32_t *cc, const float *cw, const uint8_t *cn, const int32_t *sc, const uint8_t *hc, const int *rows,
        int hw, int j, const float *table, const float *rs, const float *bias, int ncodes, int O, float *a) {
    global_pixel(cc, cw, cn, sc, hc, rows, hw, j, table, rs, bias, ncodes, O, a);
}

/* one output row of the global stem over the pool cells (cc: their distinct codes, cw: weights, cn: how many;
 * hc[k]: the 7-wide horizontal window of cells centred at k holds one code), into the planes as local_row does */
static inline __attribute__((always_inline)) void global_row(
        const int32_t *cc, const float *cw, const uint8_t *cn, const int32_t *sc, const uint8_t *hc, int hh, int hw,
        int i, const float *table, const float *rs, const float *bsum, const float *bias, int ncodes, int O,
        float *out, size_t plane, uint8_t *ok, float *acc) {
    int rows[7];
    for (int d = 0; d < 7; d++) rows[d] = reflect(i + d - 3, hh);
    const int32_t *own = sc + (size_t)i * hw;
    for (int j = 0; j < hw; j++) ok[j] = own[j] >= 0;
    for (int d = 0; d < 7; d++) {
        const int32_t *r = sc + (size_t)rows[d] * hw;
        const uint8_t *h = hc + (size_t)rows[d] * hw;
        for (int j = 0; j < hw; j++) ok[j] &= h[j] & (r[j] == own[j]);
    }
    int j = 0;
    while (j < hw) {
        int c = own[j], e = j;
        while (e < hw && ok[e] && own[e] == c) e++;
        if (e > j) {
            for (int o = 0; o < O; o++) {
                float v = bsum[(size_t)c * O + o], *dst = out + (size_t)o * plane;
                for (int t = j; t < e; t++) dst[t] = v;
            }
            j = e;
            continue;
        }
        while (e < hw && !ok[e]) e++;  /* a run of windows over several codes: summed into acc, then stored */
        for (int t = j; t < e; t++) {
            float *a = acc + (size_t)(t - j) * O;
            if (O == 64) global_pixel_64(cc, cw, cn, sc, hc, rows, hw, t, table, rs, bias, ncodes, a);
            else global_pixel_any(cc, cw, cn, sc, hc, rows, hw, t, table, rs, bias, ncodes, O, a);
        }
        for (int o = 0; o < O; o++) {
            float *dst = out + (size_t)o * plane;
            for (int t = j; t < e; t++) dst[t] = acc[(size_t)(t - j) * O + o];
        }
        j = e;
    }
}

/* global stem: AvgPool2d(3, 2, 1, count_include_pad=False) then reflect pad 3 and a 7x7 conv, from codes */
int global_stem(const int32_t *code, int H, int W, const float *table, const float *wsum, const float *bias,
                int ncodes, int O, float *out, int threads) {
    int status = check_args(code, H, W, ncodes, O);
    if (status) return status;
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
#endif
    int hh = (H - 1) / 2 + 1, hw = (W - 1) / 2 + 1;
    size_t cells = (size_t)hh * hw;
    int32_t *cc = (int32_t *)malloc(sizeof(int32_t) * cells * 9);   /* distinct codes of each pool cell */
    float *cw = (float *)malloc(sizeof(float) * cells * 9);           /* their weights: multiplicity / count */
    uint8_t *cn = (uint8_t *)malloc(cells), *hc = (uint8_t *)malloc(cells);
    int32_t *sc = (int32_t *)malloc(sizeof(int32_t) * cells);        /* a cell's one code, or -1 */
    float *rs = row_sums(table, ncodes, O), *bs = bias_sums(wsum, bias, ncodes, O);
    if (!cc || !cw || !cn || !hc || !sc || !rs || !bs) {
        free(cc); free(cw); free(cn); free(hc); free(sc); free(rs); free(bs);
        return STEMS_NOMEM;
    }
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
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < hh; i++) {
        for (int j = 0; j < hw; j++) {
            const int32_t *row = sc + (size_t)i * hw;
            int c = row[j], u = c >= 0;
            for (int d = -3; d <= 3 && u; d++) u = row[reflect(j + d, hw)] == c;
            hc[(size_t)i * hw + j] = (uint8_t)u;
        }
    }
    int nomem = 0;
    #pragma omp parallel
    {
        uint8_t *ok = (uint8_t *)malloc((size_t)hw);
        float *acc = (float *)malloc(sizeof(float) * (size_t)hw * O);
        if (!ok || !acc) {
            #pragma omp atomic write
            nomem = 1;
        }
        #pragma omp for schedule(static)
        for (int i = 0; i < hh; i++) {
            if (!ok || !acc) continue;
            float *row_out = out + (size_t)i * hw;
            switch (O) {  /* label2city_1024p's global stem has 64 outputs */
            case 64: global_row(cc, cw, cn, sc, hc, hh, hw, i, table, rs, bs, bias, ncodes, 64, row_out, cells, ok,
                                acc); break;
            default: global_row(cc, cw, cn, sc, hc, hh, hw, i, table, rs, bs, bias, ncodes, O, row_out, cells, ok, acc);
            }
        }
        free(ok); free(acc);
    }
    free(cc); free(cw); free(cn); free(hc); free(sc); free(rs); free(bs);
    return nomem ? STEMS_NOMEM : STEMS_OK;
}
