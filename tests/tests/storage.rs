//! S3 and Parquet I/O shared by the Lambdas, against a real S3 API.

use std::sync::Arc;

use arrow::array::{Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, ParquetMetaDataWriter};
use totesys_tests::*;
use utils::parquet_io::{
    PART_SIZE, ParquetUpload, S3UploadWriter, open_parquet, open_parquet_version, read_parquet,
};
use utils::store::S3Store;

/// Deterministic bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn a_large_object_goes_up_in_parts_and_reads_back_byte_for_byte() {
    let store = bucket().await;
    let mut writer = S3UploadWriter::new(store.clone(), "big/object.bin");
    let mut expected = Vec::new();
    // Uneven writes that straddle part boundaries: 2.5 parts in all.
    for (i, len) in [
        3 * 1024 * 1024,
        PART_SIZE,
        7 * 1024 * 1024 + 17,
        1024 * 1024 - 17,
    ]
    .into_iter()
    .enumerate()
    {
        let chunk = noise(len, i as u64 + 1);
        expected.extend_from_slice(&chunk);
        writer.write(Bytes::from(chunk)).await.unwrap();
    }
    // Two full parts are already out, yet nothing is visible before completion.
    assert_eq!(all_keys(&store).await, Vec::<String>::new());
    writer.complete().await.unwrap();
    let got = store.get("big/object.bin").await.unwrap().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "content differs");
    // Create, three parts, complete; then the list and the get.
    assert_eq!(store.requests(), 5 + 1 + 1);
}

#[tokio::test]
async fn an_aborted_upload_leaves_nothing_behind() {
    let store = bucket().await;
    let mut writer = S3UploadWriter::new(store.clone(), "big/aborted.bin");
    writer
        .write(Bytes::from(noise(PART_SIZE + 1, 7)))
        .await
        .unwrap();
    writer.abort().await;
    assert_eq!(all_keys(&store).await, Vec::<String>::new());
    let sdk = sdk_config().await;
    let pending = utils::store::s3_client(&sdk)
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    assert!(pending.uploads().is_empty(), "{:?}", pending.uploads());
}

async fn pending_uploads(store: &S3Store) -> usize {
    let sdk = sdk_config().await;
    utils::store::s3_client(&sdk)
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

/// A Parquet upload far enough along that a multipart upload is under way: one row group of
/// incompressible text, more than a part.
async fn upload_under_way(store: &S3Store, key: &str) -> ParquetUpload {
    let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]));
    let text: Vec<String> = noise(70_000 * 100, 7)
        .chunks(100)
        .map(|chunk| chunk.iter().map(|b| char::from(b'a' + b % 26)).collect())
        .collect();
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(text))]).unwrap();
    let mut upload = ParquetUpload::create(store, key, schema, ["text"]).unwrap();
    upload.write(&batch).await.unwrap();
    assert_eq!(
        pending_uploads(store).await,
        1,
        "a multipart upload is under way"
    );
    upload
}

/// A write that fails (here, a batch of another schema) aborts the upload itself: no caller's
/// error path can leave its parts behind.
#[tokio::test]
async fn a_failed_write_aborts_its_upload() {
    let store = bucket().await;
    let mut upload = upload_under_way(&store, "t/failed.parquet").await;
    let other = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
    let wrong = RecordBatch::try_new(other, vec![Arc::new(Int32Array::from(vec![1]))]).unwrap();
    assert!(upload.write(&wrong).await.is_err());
    assert_eq!(pending_uploads(&store).await, 0);
    assert!(
        upload.write(&wrong).await.is_err(),
        "an aborted upload takes nothing more"
    );
    assert!(upload.finish(Vec::new()).await.is_err());
    assert_eq!(all_keys(&store).await, Vec::<String>::new());
}

/// An upload dropped unfinished (a path that neither finished nor aborted it) is aborted in
/// the background.
#[tokio::test]
async fn an_upload_dropped_unfinished_is_aborted() {
    let store = bucket().await;
    drop(upload_under_way(&store, "t/dropped.parquet").await);
    for _ in 0..50 {
        if pending_uploads(&store).await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending_uploads(&store).await, 0);
    assert_eq!(all_keys(&store).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_small_parquet_file_is_one_put_with_its_metadata() {
    let store = bucket().await;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("Zoë")])),
        ],
    )
    .unwrap();
    let mut upload =
        ParquetUpload::create(&store, "t/2024/11/14/093005123456.parquet", schema, ["id"]).unwrap();
    upload.write(&batch).await.unwrap();
    upload.write(&batch).await.unwrap();
    let written = upload
        .finish(vec![("totesys.row_count".into(), "6".into())])
        .await
        .unwrap();
    assert_eq!(written.rows, 6);
    assert_eq!(store.requests(), 1, "a single PutObject");
    let bytes = store.get(&written.key).await.unwrap().unwrap();
    assert_eq!(bytes.len() as u64, written.bytes);
    let contents = read_parquet(bytes).unwrap();
    assert_eq!(contents.num_rows(), 6);
    assert_eq!(contents.metadata_value("totesys.row_count"), Some("6"));
    assert_eq!(
        contents.batches[0].column(1).slice(3, 3).as_ref(),
        batch.column(1).as_ref()
    );
}

/// A footer whose row count is negative (corrupt, or written by a broken writer) is an error
/// naming it, not a file of 0 rows that a load would record as loaded.
#[tokio::test]
async fn a_footer_counting_negative_rows_is_refused() {
    let store = bucket().await;
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
    let mut upload = ParquetUpload::create(&store, "t/good.parquet", schema, ["id"]).unwrap();
    upload.write(&batch).await.unwrap();
    let written = upload.finish(Vec::new()).await.unwrap();
    assert_eq!(open_parquet(&store, &written.key).await.unwrap().rows, 2);

    // The same data pages under a footer that says -2 rows (the writer sums the row groups').
    let bytes = store.get(&written.key).await.unwrap().unwrap();
    let end = bytes.len() - 8;
    let footer = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
    let metadata = ParquetMetaDataReader::decode_metadata(&bytes[end - footer..end]).unwrap();
    let row_groups = metadata
        .row_groups()
        .iter()
        .map(|g| g.clone().into_builder().set_num_rows(-2).build().unwrap())
        .collect();
    let file = metadata.file_metadata().clone();
    let corrupt = ParquetMetaData::new(file, row_groups);
    let mut rewritten = bytes[..end - footer].to_vec();
    ParquetMetaDataWriter::new(&mut rewritten, &corrupt)
        .finish()
        .unwrap();
    store
        .put(
            "t/corrupt.parquet",
            Bytes::from(rewritten),
            "application/vnd.apache.parquet",
        )
        .await
        .unwrap();
    let Err(e) = open_parquet(&store, "t/corrupt.parquet").await else {
        panic!("a negative row count is refused")
    };
    assert!(e.to_string().contains("the footer counts -2 rows"), "{e}");
}

/// A reader that recorded an object's ETag reads that version or fails: never the bytes of a
/// version that replaced it in between (the load's ledger records the ETag it read).
#[tokio::test]
async fn ranged_reads_of_a_version_fail_once_it_is_replaced() {
    let store = bucket().await;
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
    let write = |ids: Vec<i32>| {
        let (store, schema) = (store.clone(), schema.clone());
        async move {
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(ids))])
                .unwrap();
            let mut upload = ParquetUpload::create(&store, "t/v.parquet", schema, ["id"]).unwrap();
            upload.write(&batch).await.unwrap();
            upload.finish(Vec::new()).await.unwrap();
            store.etag("t/v.parquet").await.unwrap().unwrap()
        }
    };
    let first = write(vec![1, 2]).await;
    assert_eq!(
        open_parquet_version(&store, "t/v.parquet", &first)
            .await
            .unwrap()
            .rows,
        2
    );
    assert_eq!(
        store
            .get_range("t/v.parquet", "bytes=0-3", Some(&first))
            .await
            .unwrap(),
        "PAR1"
    );

    let second = write(vec![1, 2, 3]).await;
    assert_ne!(first, second);
    let e = store
        .get_range("t/v.parquet", "bytes=0-3", Some(&first))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "the object was replaced since it was read: its ETag is no longer {first}"
        )),
        "{e}"
    );
    assert!(
        e.is_transient(),
        "a retry reads the new version, and its ETag, afresh"
    );
    let Err(e) = open_parquet_version(&store, "t/v.parquet", &first).await else {
        panic!("the replaced version cannot be opened")
    };
    assert!(e.to_string().contains("replaced since it was read"), "{e}");
    assert_eq!(
        open_parquet_version(&store, "t/v.parquet", &second)
            .await
            .unwrap()
            .rows,
        3
    );
}

mod connector {
    use super::*;
    use utils::db::{Connector, DbSource};

    async fn user_of(connector: &Connector) -> String {
        let client = connector.connect("connector-test").await.unwrap();
        client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Warm invocations reuse the secret read by the first; when the database refuses the
    /// cached credentials (after a rotation: here the user they name is gone), the secret is
    /// read again, once.
    #[tokio::test]
    async fn the_secret_is_read_once_and_again_when_the_login_is_refused() {
        let admin = totesys_tests::connect(&server_url()).await;
        let (old, new) = (unique_name("rotated_from"), unique_name("rotated_to"));
        for role in [&old, &new] {
            admin
                .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'pw'"))
                .await
                .unwrap();
        }
        let server: tokio_postgres::Config = server_url().parse().unwrap();
        let tokio_postgres::config::Host::Tcp(host) = &server.get_hosts()[0] else {
            panic!("a TCP host")
        };
        let secret = |user: &str| {
            serde_json::json!({
                "host": host, "port": server.get_ports()[0], "user": user, "password": "pw",
                "database": "postgres", "sslmode": "prefer"
            })
            .to_string()
        };
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk_config().await);
        let id = unique_name("db-secret");
        secrets
            .create_secret()
            .name(&id)
            .secret_string(secret(&old))
            .send()
            .await
            .unwrap();
        let connector = Connector::new(DbSource::Secret(id.clone()), secrets.clone());
        assert_eq!(user_of(&connector).await, old);

        // Rotated: the cached credentials still work, so they are used without a read.
        secrets
            .put_secret_value()
            .secret_id(&id)
            .secret_string(secret(&new))
            .send()
            .await
            .unwrap();
        assert_eq!(user_of(&connector).await, old, "the cached secret");

        // The old user is gone: the login is refused, the secret read again.
        admin
            .batch_execute(&format!("DROP ROLE \"{old}\""))
            .await
            .unwrap();
        assert_eq!(user_of(&connector).await, new);
        assert_eq!(
            user_of(&connector.clone()).await,
            new,
            "clones share the cache"
        );
        admin
            .batch_execute(&format!("DROP ROLE \"{new}\""))
            .await
            .unwrap();
    }
}

mod tls {
    use super::*;
    use utils::db::connect;

    async fn ssl_in_use(client: &tokio_postgres::Client) -> bool {
        client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// `sslmode=require` encrypts; a root certificate makes the client verify the server. On a
    /// server without TLS, `require` must refuse to connect rather than fall back.
    #[tokio::test]
    async fn sslmode_require_encrypts_and_a_root_certificate_verifies() {
        let url = format!("{}?sslmode=require", url_for("postgres"));
        let config: tokio_postgres::Config = url.parse().unwrap();
        let admin = totesys_tests::connect(&server_url()).await;
        let server_ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        if server_ssl != "on" {
            assert!(
                std::env::var("TEST_PG_CA_CERT").is_err(),
                "the harness's own cluster runs with TLS"
            );
            let err = connect(config, None, "tls-test").await.unwrap_err();
            assert_eq!(err.error_type(), "TransientDatabaseError", "{err}");
            return;
        }
        let client = connect(config.clone(), None, "tls-test").await.unwrap();
        assert!(ssl_in_use(&client).await);
        if let Ok(ca) = std::env::var("TEST_PG_CA_CERT") {
            let verified = connect(config.clone(), Some(&ca), "tls-test")
                .await
                .unwrap();
            assert!(ssl_in_use(&verified).await);
            // The server's certificate does not chain to a CA it was not signed by.
            let dir = std::env::temp_dir().join(unique_name("ca"));
            std::fs::create_dir_all(&dir).unwrap();
            let wrong = dir.join("wrong.pem");
            std::fs::write(&wrong, WRONG_CA).unwrap();
            let err = connect(config, Some(wrong.to_str().unwrap()), "tls-test")
                .await
                .unwrap_err();
            assert!(err.to_string().contains("TLS"), "{err}");
            // Retrying cannot help: the same certificate meets the same roots.
            assert_eq!(err.error_type(), "Configuration", "{err}");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    const WRONG_CA: &str = include_str!("../fixtures/unrelated-ca.pem");
}
