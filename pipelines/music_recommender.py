"""The music recommender DAG: one typed KFP v2 pipeline, free of any runner or environment specifics."""

from kfp import dsl, kubernetes

from components.evaluate import evaluate
from components.ingest import ingest
from components.preprocess import preprocess
from components.push import push
from components.train_autoencoder import train_autoencoder
from components.train_cnn import train_cnn
from components.train_dnn import train_dnn
from musicrec.settings import AutoencoderSettings, BlessingSettings, CnnSettings, RatingSettings, TransformSettings

PIPELINE_NAME = "music-recommender"
# The EKS managed node group that carries the NVIDIA GPUs (manifests/), and its taint.
GPU_NODE_GROUP = "gpu"
GPU_RESOURCE = "nvidia.com/gpu"


def on_gpu(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Request one NVIDIA GPU, tolerate the GPU taint and pin the task to the GPU node group."""
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    kubernetes.add_node_selector(task, label_key="eks.amazonaws.com/nodegroup", label_value=GPU_NODE_GROUP)
    return task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Review-aware music recommender trained on Amazon Review Data (2018) Digital Music.",
)
def music_recommender(
    reviews_uri: str,
    metadata_uri: str,
    push_destination: str,
    review_vocabulary_size: int = TransformSettings.review_vocabulary_size,
    summary_vocabulary_size: int = TransformSettings.summary_vocabulary_size,
    min_token_frequency: int = TransformSettings.min_token_frequency,
    max_review_tokens: int = TransformSettings.max_review_tokens,
    max_summary_tokens: int = TransformSettings.max_summary_tokens,
    beam_runner: str = "DirectRunner",
    beam_options: str = "",
    cnn_embedding_dim: int = CnnSettings.embedding_dim,
    cnn_filters: int = CnnSettings.filters,
    cnn_kernel_sizes: str = ",".join(map(str, CnnSettings.kernel_sizes)),
    cnn_dropout: float = CnnSettings.dropout,
    cnn_learning_rate: float = CnnSettings.learning_rate,
    cnn_batch_size: int = CnnSettings.batch_size,
    cnn_epochs: int = CnnSettings.epochs,
    ae_bottleneck: int = AutoencoderSettings.bottleneck,
    ae_hidden_units: str = ",".join(map(str, AutoencoderSettings.hidden_units)),
    ae_learning_rate: float = AutoencoderSettings.learning_rate,
    ae_momentum: float = AutoencoderSettings.momentum,
    ae_batch_size: int = AutoencoderSettings.batch_size,
    ae_epochs: int = AutoencoderSettings.epochs,
    dnn_id_embedding_dim: int = RatingSettings.id_embedding_dim,
    dnn_hidden_units: str = ",".join(map(str, RatingSettings.hidden_units)),
    dnn_l2: float = RatingSettings.l2,
    dnn_dropout: float = RatingSettings.dropout,
    dnn_learning_rate: float = RatingSettings.learning_rate,
    dnn_batch_size: int = RatingSettings.batch_size,
    dnn_epochs: int = RatingSettings.epochs,
    dnn_negatives: int = RatingSettings.negatives,
    ranking_users: int = RatingSettings.ranking_users,
    min_sentiment_auc: float = BlessingSettings.min_sentiment_auc,
    max_rating_rmse: float = BlessingSettings.max_rating_rmse,
    min_ranking_ndcg: float = BlessingSettings.min_ranking_ndcg,
    max_regression: float = BlessingSettings.max_regression,
    serving_tolerance: float = BlessingSettings.serving_tolerance,
    seed: int = CnnSettings.seed,
) -> None:
    """Train a review-aware music recommender from Amazon Review Data (2018) "Digital Music".

    Args:
        reviews_uri: Digital_Music.json(.gz): a path in the container, s3://bucket/key or gs://bucket/key.
        metadata_uri: meta_Digital_Music.json(.gz), same schemes.
        push_destination: the model store blessed models are pushed to (TF Serving layout): s3://bucket/prefix,
            gs://bucket/prefix or a path on a volume the pods share.
        review_vocabulary_size: the most review tokens in the vocabulary (most frequent in train).
        summary_vocabulary_size: the most summary tokens in the vocabulary.
        min_token_frequency: tokens seen fewer times in train are out of vocabulary.
        max_review_tokens: review token sequences are truncated or padded to this length.
        max_summary_tokens: summary token sequences are truncated or padded to this length.
        beam_runner: Beam runner of the preprocess step (DirectRunner in the pod; DataflowRunner, FlinkRunner...).
        beam_options: further Beam flags for that runner, one shell-quoted string.
        cnn_embedding_dim: token embedding width of the sentiment CNN.
        cnn_filters: filters of each CNN convolution branch.
        cnn_kernel_sizes: comma-separated kernel widths of the parallel review convolutions.
        cnn_dropout: dropout rate before the CNN classifier.
        cnn_learning_rate: Adam learning rate of the CNN.
        cnn_batch_size: CNN examples a step.
        cnn_epochs: the most CNN epochs (early stopping on eval AUC).
        ae_bottleneck: autoencoder code size (and the PCA baseline's dimension).
        ae_hidden_units: comma-separated autoencoder encoder widths, mirrored by the decoder.
        ae_learning_rate: autoencoder SGD learning rate.
        ae_momentum: autoencoder SGD momentum.
        ae_batch_size: autoencoder examples a step.
        ae_epochs: the most autoencoder epochs (early stopping on eval reconstruction error).
        dnn_id_embedding_dim: user and item embedding width of the rating DNN.
        dnn_hidden_units: comma-separated dense widths of the rating DNN.
        dnn_l2: L2 penalty on the rating DNN's embeddings and kernels.
        dnn_dropout: dropout after each rating DNN dense layer.
        dnn_learning_rate: Adam learning rate of the rating DNN.
        dnn_batch_size: rating DNN examples a step.
        dnn_epochs: the most rating DNN epochs (early stopping on eval RMSE).
        dnn_negatives: items sampled against each train review for the DNN's ranking (interaction) head.
        ranking_users: the most test users ranked for HR@10 / NDCG@10 (seeded sample; DESIGN.md says 5,000).
        min_sentiment_auc: blessing needs at least this sentiment test AUC.
        max_rating_rmse: blessing needs at most this rating test RMSE.
        min_ranking_ndcg: blessing needs at least this test NDCG@10.
        max_regression: blessing tolerates this much worsening of those metrics against the pushed version.
        serving_tolerance: blessing tolerates this AUC gap between the served SavedModel and training's measure.
        seed: seeds every model's weights, shuffling and dropout.
    """
    ingest_task = (
        ingest(reviews_uri=reviews_uri, metadata_uri=metadata_uri)
        .set_display_name("Ingest reviews")
        .set_cpu_request("1")
        .set_memory_request("4G")
        .set_memory_limit("8G")
    )
    # The bytes behind a URI can change while the URI stays the same: never serve ingest from cache.
    ingest_task.set_caching_options(enable_caching=False)
    preprocess_task = (
        preprocess(
            examples=ingest_task.outputs["examples"],
            review_vocabulary_size=review_vocabulary_size,
            summary_vocabulary_size=summary_vocabulary_size,
            min_token_frequency=min_token_frequency,
            max_review_tokens=max_review_tokens,
            max_summary_tokens=max_summary_tokens,
            beam_runner=beam_runner,
            beam_options=beam_options,
        )
        .set_display_name("Preprocess: NLTK + tf.Transform")
        .set_cpu_request("2")
        .set_cpu_limit("4")  # the step starts a worker process per CPU it may use (transform.usable_cpus)
        .set_memory_request("8G")
        .set_memory_limit("16G")
    )
    cnn_task = on_gpu(
        train_cnn(
            transformed_examples=preprocess_task.outputs["transformed_examples"],
            transform_graph=preprocess_task.outputs["transform_graph"],
            embedding_dim=cnn_embedding_dim,
            filters=cnn_filters,
            kernel_sizes=cnn_kernel_sizes,
            dropout=cnn_dropout,
            learning_rate=cnn_learning_rate,
            batch_size=cnn_batch_size,
            epochs=cnn_epochs,
            seed=seed,
        )
        .set_display_name("Train sentiment CNN")
        .set_cpu_request("4")
        .set_memory_request("8G")
        .set_memory_limit("16G")
    )
    autoencoder_task = on_gpu(
        train_autoencoder(
            transformed_examples=preprocess_task.outputs["transformed_examples"],
            transform_graph=preprocess_task.outputs["transform_graph"],
            cnn_model=cnn_task.outputs["model"],
            bottleneck=ae_bottleneck,
            hidden_units=ae_hidden_units,
            learning_rate=ae_learning_rate,
            momentum=ae_momentum,
            batch_size=ae_batch_size,
            epochs=ae_epochs,
            seed=seed,
        )
        .set_display_name("Train stacked autoencoder")
        .set_cpu_request("4")
        .set_memory_request("8G")
        .set_memory_limit("16G")
    )
    dnn_task = on_gpu(
        train_dnn(
            transformed_examples=preprocess_task.outputs["transformed_examples"],
            transform_graph=preprocess_task.outputs["transform_graph"],
            cnn_model=cnn_task.outputs["model"],
            encoder=autoencoder_task.outputs["encoder"],
            id_embedding_dim=dnn_id_embedding_dim,
            hidden_units=dnn_hidden_units,
            l2=dnn_l2,
            dropout=dnn_dropout,
            learning_rate=dnn_learning_rate,
            batch_size=dnn_batch_size,
            epochs=dnn_epochs,
            negatives=dnn_negatives,
            ranking_users=ranking_users,
            seed=seed,
        )
        .set_display_name("Train DNN rating model")
        .set_cpu_request("4")
        .set_memory_request("8G")
        .set_memory_limit("16G")
    )
    evaluate_task = (
        evaluate(
            examples=ingest_task.outputs["examples"],
            ingest_report=ingest_task.outputs["report"],
            transformed_examples=preprocess_task.outputs["transformed_examples"],
            transform_graph=preprocess_task.outputs["transform_graph"],
            cnn_model=cnn_task.outputs["model"],
            cnn_report=cnn_task.outputs["report"],
            encoder=autoencoder_task.outputs["encoder"],
            autoencoder_report=autoencoder_task.outputs["report"],
            projection=autoencoder_task.outputs["projection"],
            rating_model=dnn_task.outputs["model"],
            rating_report=dnn_task.outputs["report"],
            push_destination=push_destination,
            min_sentiment_auc=min_sentiment_auc,
            max_rating_rmse=max_rating_rmse,
            min_ranking_ndcg=min_ranking_ndcg,
            max_regression=max_regression,
            serving_tolerance=serving_tolerance,
        )
        .set_display_name("Evaluate and bless")
        .set_cpu_request("2")
        .set_memory_request("4G")
        .set_memory_limit("8G")
    )
    # The pushed version it compares with changes outside the pipeline: never serve a blessing from cache.
    evaluate_task.set_caching_options(enable_caching=False)
    with dsl.If(evaluate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712 - a KFP condition, not a Python test
        push_task = (
            push(
                cnn_model=cnn_task.outputs["model"],
                encoder=autoencoder_task.outputs["encoder"],
                rating_model=dnn_task.outputs["model"],
                evaluation=evaluate_task.outputs["evaluation"],
                push_destination=push_destination,
            )
            .set_display_name("Push blessed models")
            .set_cpu_request("1")
            .set_memory_request("2G")
            .set_memory_limit("4G")
        )
        push_task.set_caching_options(enable_caching=False)
