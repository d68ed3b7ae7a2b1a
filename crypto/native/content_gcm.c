/*
 * AES-256-GCM sealing and opening of runs of gocryptfs v2 content blocks in one call.
 *
 * Node's cipher objects cannot take a new IV, so sealing a 4 KiB block through node:crypto
 * costs a createCipheriv (an OpenSSL 3 cipher fetch and context set-up) per block. Here one
 * context per key is keyed once with a cipher fetched once per process, and each block only
 * re-initialises the IV. The code links against the OpenSSL inside the node binary (its
 * symbols are exported to addons), so there is only one OpenSSL in the process.
 *
 * Block layout and AAD exactly as in src/contentenc.ts:
 *   block = nonce (16) | ciphertext | tag (16),  AAD = uint64 BE block number | file ID (16)
 */
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LEN 32
#define FILE_ID_LEN 16
#define NONCE_LEN 16
#define TAG_LEN 16
#define PLAIN_BLOCK 4096
#define OVERHEAD (NONCE_LEN + TAG_LEN)
#define CIPHER_BLOCK (PLAIN_BLOCK + OVERHEAD)
#define RAND_BATCH 256

/* Failure kinds returned to JavaScript as -(2 * block index + kind + 1). */
#define FAIL_TAG 0
#define FAIL_ZERO_NONCE 1

typedef struct {
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
} gcm_key;

static const napi_type_tag KEY_TAG = {0x7c1f4e2a9b3d4c11ULL, 0x8e5a6b7c2d1f3e40ULL};

static EVP_CIPHER *aes_gcm;
static pthread_once_t aes_gcm_once = PTHREAD_ONCE_INIT;

/* Fetched once and kept for the life of the process: every fetch takes OpenSSL's store lock. */
static void fetch_cipher(void) { aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL); }

static napi_value throw_error(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static void free_key(gcm_key *k) {
  /* EVP_CIPHER_CTX_free cleanses the key schedule. */
  EVP_CIPHER_CTX_free(k->enc);
  EVP_CIPHER_CTX_free(k->dec);
  k->enc = NULL;
  k->dec = NULL;
}

static void finalize_key(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free_key((gcm_key *)data);
  free(data);
}

static EVP_CIPHER_CTX *keyed_ctx(const unsigned char *key, int enc) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL) return NULL;
  if (EVP_CipherInit_ex(ctx, aes_gcm, NULL, NULL, NULL, enc) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
      EVP_CipherInit_ex(ctx, NULL, NULL, key, NULL, enc) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

static int get_bytes(napi_env env, napi_value v, unsigned char **data, size_t *len) {
  napi_typedarray_type type;
  size_t length, offset;
  napi_value ab;
  void *p;
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return 0;
  if (napi_get_typedarray_info(env, v, &type, &length, &p, &ab, &offset) != napi_ok) return 0;
  if (type != napi_uint8_array) return 0;
  *data = (unsigned char *)p;
  *len = length;
  return 1;
}

static gcm_key *get_key(napi_env env, napi_value v) {
  bool ok = false;
  void *data = NULL;
  if (napi_check_object_type_tag(env, v, &KEY_TAG, &ok) != napi_ok || !ok) return NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok) return NULL;
  gcm_key *k = (gcm_key *)data;
  return k->enc == NULL ? NULL : k;
}

static int get_u64(napi_env env, napi_value v, uint64_t *out) {
  int64_t n;
  if (napi_get_value_int64(env, v, &n) != napi_ok || n < 0) return 0;
  *out = (uint64_t)n;
  return 1;
}

static void set_aad(unsigned char aad[8 + FILE_ID_LEN], uint64_t block_no) {
  for (int i = 7; i >= 0; i--) {
    aad[i] = (unsigned char)(block_no & 0xff);
    block_no >>= 8;
  }
}

/* createKey(subkey: Uint8Array(32)) -> external holding two keyed contexts. */
static napi_value create_key(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  unsigned char *key;
  size_t key_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      !get_bytes(env, argv[0], &key, &key_len) || key_len != KEY_LEN)
    return throw_error(env, "createKey: expected a 32-byte Uint8Array");
  pthread_once(&aes_gcm_once, fetch_cipher);
  if (aes_gcm == NULL) return throw_error(env, "createKey: AES-256-GCM is not available");
  gcm_key *k = calloc(1, sizeof *k);
  if (k == NULL) return throw_error(env, "createKey: out of memory");
  k->enc = keyed_ctx(key, 1);
  k->dec = keyed_ctx(key, 0);
  if (k->enc == NULL || k->dec == NULL) {
    free_key(k);
    free(k);
    return throw_error(env, "createKey: cannot initialise AES-256-GCM");
  }
  if (napi_create_external(env, k, finalize_key, NULL, &result) != napi_ok ||
      napi_type_tag_object(env, result, &KEY_TAG) != napi_ok) {
    free_key(k);
    free(k);
    return throw_error(env, "createKey: cannot create the key handle");
  }
  return result;
}

/* destroyKey(handle): frees the contexts now instead of at garbage collection. */
static napi_value destroy_key(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1)
    return throw_error(env, "destroyKey: expected a key handle");
  gcm_key *k = get_key(env, argv[0]);
  if (k != NULL) free_key(k);
  return NULL;
}

/*
 * seal(handle, fileId, firstBlockNo, plain, out, outOffset, nonces | null) -> bytes written.
 * Nonces come from `nonces` (16 bytes per block, for known-answer tests) or from RAND_bytes.
 */
static napi_value seal(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7], result;
  unsigned char *file_id, *plain, *out, *nonces = NULL;
  size_t file_id_len, plain_len, out_len, nonces_len = 0;
  uint64_t first, out_off;
  napi_valuetype nt;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 7)
    return throw_error(env, "seal: expected 7 arguments");
  gcm_key *k = get_key(env, argv[0]);
  if (k == NULL) return throw_error(env, "seal: invalid or destroyed key handle");
  if (!get_bytes(env, argv[1], &file_id, &file_id_len) || file_id_len != FILE_ID_LEN ||
      !get_u64(env, argv[2], &first) || !get_bytes(env, argv[3], &plain, &plain_len) ||
      !get_bytes(env, argv[4], &out, &out_len) || !get_u64(env, argv[5], &out_off))
    return throw_error(env, "seal: invalid arguments");
  size_t count = (plain_len + PLAIN_BLOCK - 1) / PLAIN_BLOCK;
  size_t need = plain_len + count * OVERHEAD;
  if (out_off > out_len || out_len - out_off < need)
    return throw_error(env, "seal: output buffer too small");
  if (napi_typeof(env, argv[6], &nt) != napi_ok) return throw_error(env, "seal: bad nonces");
  if (nt != napi_null && nt != napi_undefined) {
    if (!get_bytes(env, argv[6], &nonces, &nonces_len) || nonces_len < count * NONCE_LEN)
      return throw_error(env, "seal: nonces must hold 16 bytes per block");
  }
  unsigned char aad[8 + FILE_ID_LEN];
  memcpy(aad + 8, file_id, FILE_ID_LEN);
  unsigned char *o = out + out_off;
  /* One RAND_bytes call per RAND_BATCH nonces: per-call overhead dominates 16-byte requests. */
  unsigned char rnd[RAND_BATCH * NONCE_LEN];
  EVP_CIPHER_CTX *ctx = k->enc;
  for (size_t i = 0; i < count; i++) {
    size_t len = plain_len - i * PLAIN_BLOCK;
    if (len > PLAIN_BLOCK) len = PLAIN_BLOCK;
    unsigned char *blk = o + i * CIPHER_BLOCK;
    int outl;
    if (nonces != NULL) {
      memcpy(blk, nonces + i * NONCE_LEN, NONCE_LEN);
    } else {
      size_t r = i % RAND_BATCH;
      if (r == 0) {
        size_t n = count - i < RAND_BATCH ? count - i : RAND_BATCH;
        if (RAND_bytes(rnd, (int)(n * NONCE_LEN)) != 1) {
          OPENSSL_cleanse(o, need);
          return throw_error(env, "seal: random number generator failed");
        }
      }
      memcpy(blk, rnd + r * NONCE_LEN, NONCE_LEN);
    }
    set_aad(aad, first + i);
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, blk) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &outl, aad, sizeof aad) != 1 ||
        EVP_EncryptUpdate(ctx, blk + NONCE_LEN, &outl, plain + i * PLAIN_BLOCK, (int)len) != 1 ||
        EVP_EncryptFinal_ex(ctx, blk + NONCE_LEN + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, blk + NONCE_LEN + len) != 1) {
      OPENSSL_cleanse(o, need);
      return throw_error(env, "seal: AES-256-GCM failed");
    }
  }
  napi_create_int64(env, (int64_t)need, &result);
  return result;
}

static int all_zero(const unsigned char *p, size_t n) {
  unsigned char acc = 0;
  for (size_t i = 0; i < n; i++) acc |= p[i];
  return acc == 0;
}

/*
 * open(handle, fileId, firstBlockNo, cipherText, out, outOffset) -> bytes written, or
 * -(2 * i + kind + 1) when block i failed (kind FAIL_TAG or FAIL_ZERO_NONCE). On failure the
 * whole output range is wiped first. A full all-zero block is a hole: 4096 zeros.
 * The caller has checked that the last block is longer than the overhead.
 */
static napi_value open_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], result;
  unsigned char *file_id, *src, *out;
  size_t file_id_len, src_len, out_len;
  uint64_t first, out_off;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6)
    return throw_error(env, "open: expected 6 arguments");
  gcm_key *k = get_key(env, argv[0]);
  if (k == NULL) return throw_error(env, "open: invalid or destroyed key handle");
  if (!get_bytes(env, argv[1], &file_id, &file_id_len) || file_id_len != FILE_ID_LEN ||
      !get_u64(env, argv[2], &first) || !get_bytes(env, argv[3], &src, &src_len) ||
      !get_bytes(env, argv[4], &out, &out_len) || !get_u64(env, argv[5], &out_off))
    return throw_error(env, "open: invalid arguments");
  size_t count = (src_len + CIPHER_BLOCK - 1) / CIPHER_BLOCK;
  size_t rest = src_len % CIPHER_BLOCK;
  if (rest != 0 && rest <= OVERHEAD) return throw_error(env, "open: truncated last block");
  size_t need = src_len - count * OVERHEAD;
  if (out_off > out_len || out_len - out_off < need)
    return throw_error(env, "open: output buffer too small");
  unsigned char aad[8 + FILE_ID_LEN];
  memcpy(aad + 8, file_id, FILE_ID_LEN);
  unsigned char *o = out + out_off;
  EVP_CIPHER_CTX *ctx = k->dec;
  int64_t status = (int64_t)need;
  for (size_t i = 0; i < count; i++) {
    size_t blen = src_len - i * CIPHER_BLOCK;
    if (blen > CIPHER_BLOCK) blen = CIPHER_BLOCK;
    size_t len = blen - OVERHEAD;
    const unsigned char *blk = src + i * CIPHER_BLOCK;
    unsigned char *dst = o + i * PLAIN_BLOCK;
    int outl;
    if (all_zero(blk, NONCE_LEN)) {
      if (blen == CIPHER_BLOCK && all_zero(blk, blen)) {
        memset(dst, 0, PLAIN_BLOCK);
        continue;
      }
      status = -(int64_t)(2 * i + FAIL_ZERO_NONCE + 1);
      break;
    }
    set_aad(aad, first + i);
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, blk) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &outl, aad, sizeof aad) != 1 ||
        EVP_DecryptUpdate(ctx, dst, &outl, blk + NONCE_LEN, (int)len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                            (void *)(blk + NONCE_LEN + len)) != 1 ||
        EVP_DecryptFinal_ex(ctx, dst + len, &outl) != 1) {
      status = -(int64_t)(2 * i + FAIL_TAG + 1);
      break;
    }
  }
  if (status < 0) OPENSSL_cleanse(o, need);
  napi_create_int64(env, status, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"createKey", NULL, create_key, NULL, NULL, NULL, napi_default, NULL},
      {"destroyKey", NULL, destroy_key, NULL, NULL, NULL, napi_default, NULL},
      {"seal", NULL, seal, NULL, NULL, NULL, napi_default, NULL},
      {"open", NULL, open_blocks, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok)
    return NULL;
  return exports;
}
